-- The jobs table: the older design's SQL model (text id, JSONB options and result,
-- timestamps with time zone) plus version, attempt and the time of the last write.
-- Unqualified names: everything lives in the schema the connection's search_path selects.
CREATE TABLE remote_jobs (
    -- COLLATE "C": ids sort in byte order, as the contract requires, and the indexes
    -- below then serve ORDER BY created_at, id COLLATE "C" without a sort.
    id                TEXT COLLATE "C" PRIMARY KEY,
    ingestion_task_id TEXT NOT NULL,
    source_file_path  TEXT NOT NULL,
    content_type      TEXT NOT NULL,
    task_options      JSONB NOT NULL DEFAULT '{}'::jsonb,
    status            TEXT NOT NULL DEFAULT 'pending' CHECK (status IN
                          ('pending', 'processing', 'completed', 'failed', 'timeout', 'cancelled')),
    worker_id         TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at        TIMESTAMPTZ,
    completed_at      TIMESTAMPTZ,
    timeout_at        TIMESTAMPTZ,
    error_message     TEXT,
    result_data       JSONB,
    retry_count       INTEGER NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries       INTEGER NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    version           BIGINT NOT NULL DEFAULT 1 CHECK (version >= 0),
    attempt           BIGINT NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- When the row was last written: old_jobs() counts a terminal job without
    -- completed_at from here.
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One index per query shape the repository issues; each ends in (created_at, id) where
-- the query orders by it, so results stream from the index in contract order.
CREATE INDEX remote_jobs_created ON remote_jobs (created_at, id);
-- find(status=...), claim_next() without content types
CREATE INDEX remote_jobs_status ON remote_jobs (status, created_at, id);
-- claim_next(content_types=[...]), find(status=..., content_type=...)
CREATE INDEX remote_jobs_status_content_type ON remote_jobs (status, content_type, created_at, id);
CREATE INDEX remote_jobs_content_type ON remote_jobs (content_type, created_at, id);
CREATE INDEX remote_jobs_worker ON remote_jobs (worker_id, created_at, id);
-- find(ingestion_task_id=...), find_by_ingestion_task() (read backwards)
CREATE INDEX remote_jobs_ingestion_task ON remote_jobs (ingestion_task_id, created_at, id);
-- expired(), expire_overdue()
CREATE INDEX remote_jobs_status_timeout ON remote_jobs (status, timeout_at);
-- old_jobs(), cleanup(): "finished" is completed_at, else the last write
CREATE INDEX remote_jobs_status_finished ON remote_jobs (status, (coalesce(completed_at, updated_at)));
