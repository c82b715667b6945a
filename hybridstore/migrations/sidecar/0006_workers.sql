-- keeps rows: older bodies have no priority, delay or unique key, which the defaults mean.
-- What claims and unique keys need (issue 12): the claim order (priority DESC, created,
-- id) over ready jobs only, delayed jobs by the instant they become ready, and the
-- active holder of a unique key. Claims read the first two indexes from their head, so
-- ten thousand delayed jobs ahead of a ready one cost a claim nothing.
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN not_before_us INTEGER;
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
CREATE INDEX jobs_ready ON jobs (priority DESC, created_us, id)
    WHERE status = 'pending' AND not_before_us IS NULL;
CREATE INDEX jobs_ready_content_type ON jobs (content_type, priority DESC, created_us, id)
    WHERE status = 'pending' AND not_before_us IS NULL;
CREATE INDEX jobs_delayed ON jobs (not_before_us)
    WHERE status = 'pending' AND not_before_us IS NOT NULL;
CREATE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;
