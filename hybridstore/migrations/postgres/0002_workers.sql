-- Workers that need nothing else: delayed jobs, priorities, unique keys, progress.
-- Existing rows take the defaults (no delay, priority 0, no key, no progress), as a job
-- body written before these fields existed reads with them.
ALTER TABLE remote_jobs
    ADD COLUMN not_before       TIMESTAMPTZ,
    ADD COLUMN priority         INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN unique_key       TEXT COLLATE "C" CHECK (unique_key <> ''),
    ADD COLUMN progress         DOUBLE PRECISION CHECK (progress >= 0 AND progress <= 1),
    ADD COLUMN progress_message TEXT;

-- At most one pending or processing job per key: the database decides which of
-- concurrent adds wins (the others get a unique violation, reported as DuplicateJob).
CREATE UNIQUE INDEX remote_jobs_unique_key ON remote_jobs (unique_key)
    WHERE status IN ('pending', 'processing') AND unique_key IS NOT NULL;

-- The claim: ready jobs in claim order. A job without not_before is ready; these indexes
-- hold only those, so delayed jobs never sit in front of ready ones and a claim reads the
-- first entries whatever the number of delayed jobs. ORDER BY priority DESC, created_at,
-- id COLLATE "C" reads them in index order.
CREATE INDEX remote_jobs_ready ON remote_jobs (priority DESC, created_at, id)
    WHERE status = 'pending' AND not_before IS NULL;
CREATE INDEX remote_jobs_ready_content_type
    ON remote_jobs (content_type, priority DESC, created_at, id)
    WHERE status = 'pending' AND not_before IS NULL;
-- Delayed jobs (and retries backing off) by the instant they become ready: a claim reads
-- only those whose time has come (not_before <= now), never the ones still waiting.
CREATE INDEX remote_jobs_delayed ON remote_jobs (not_before)
    WHERE status = 'pending' AND not_before IS NOT NULL;
-- Abandoned leases (processing, timeout_at < now) are found through remote_jobs_status_timeout
-- (status, timeout_at) from 0001.
