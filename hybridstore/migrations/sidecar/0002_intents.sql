-- A write records its intent before touching the files and clears it in the same
-- transaction that updates the job's row. An intent left behind marks exactly the jobs a
-- crashed process may have left out of line, so recovery re-reads only those files.
CREATE TABLE intents (
    job_id     TEXT PRIMARY KEY,
    operation  TEXT NOT NULL,
    started_us INTEGER NOT NULL
);
