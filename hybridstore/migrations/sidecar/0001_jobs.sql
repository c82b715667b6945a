-- One row per job file: the fields queries filter and sort on, plus a copy of the body so
-- set queries are answered from the index without opening one file per job.
-- Times are integer microseconds since the Unix epoch, UTC.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    status            TEXT NOT NULL,
    content_type      TEXT NOT NULL,
    worker_id         TEXT,
    ingestion_task_id TEXT NOT NULL,
    created_us        INTEGER NOT NULL,
    timeout_us        INTEGER,
    finished_us       INTEGER NOT NULL,  -- completed_at, else the time of the last write
    version           INTEGER NOT NULL,
    size              INTEGER NOT NULL,  -- bytes of the body
    body              BLOB NOT NULL      -- the file's bytes, as written
);
CREATE INDEX jobs_created ON jobs (created_us, id);
CREATE INDEX jobs_status ON jobs (status, created_us, id);
CREATE INDEX jobs_status_content_type ON jobs (status, content_type, created_us, id);
CREATE INDEX jobs_content_type ON jobs (content_type, created_us, id);
CREATE INDEX jobs_worker ON jobs (worker_id, created_us, id);
CREATE INDEX jobs_ingestion_task ON jobs (ingestion_task_id, created_us, id);
CREATE INDEX jobs_status_timeout ON jobs (status, timeout_us);
CREATE INDEX jobs_status_finished ON jobs (status, finished_us);
