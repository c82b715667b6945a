-- How many jobs (and bytes of bodies) there are per status, content type and worker, kept
-- by triggers in the same transaction as the rows: count() and statistics() then sum a
-- few dozen rows whatever the size of the store, instead of walking an index.
-- has_worker tells a job without worker (worker_id '') from one whose worker id is ''.
CREATE TABLE job_counts (
    status       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    has_worker   INTEGER NOT NULL,
    worker_id    TEXT NOT NULL,
    jobs         INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    PRIMARY KEY (status, content_type, has_worker, worker_id)
);

CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts VALUES (
        NEW.status, NEW.content_type, NEW.worker_id IS NOT NULL, ifnull(NEW.worker_id, ''),
        1, NEW.size
    )
    ON CONFLICT DO UPDATE SET jobs = jobs + 1, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET jobs = jobs - 1, bytes = bytes - OLD.size
    WHERE status = OLD.status AND content_type = OLD.content_type
      AND has_worker = (OLD.worker_id IS NOT NULL) AND worker_id = ifnull(OLD.worker_id, '');
    DELETE FROM job_counts
    WHERE status = OLD.status AND content_type = OLD.content_type
      AND has_worker = (OLD.worker_id IS NOT NULL) AND worker_id = ifnull(OLD.worker_id, '')
      AND jobs = 0;
END;

CREATE TRIGGER job_counts_update AFTER UPDATE OF status, content_type, worker_id, size ON jobs
BEGIN
    UPDATE job_counts SET jobs = jobs - 1, bytes = bytes - OLD.size
    WHERE status = OLD.status AND content_type = OLD.content_type
      AND has_worker = (OLD.worker_id IS NOT NULL) AND worker_id = ifnull(OLD.worker_id, '');
    DELETE FROM job_counts
    WHERE status = OLD.status AND content_type = OLD.content_type
      AND has_worker = (OLD.worker_id IS NOT NULL) AND worker_id = ifnull(OLD.worker_id, '')
      AND jobs = 0;
    INSERT INTO job_counts VALUES (
        NEW.status, NEW.content_type, NEW.worker_id IS NOT NULL, ifnull(NEW.worker_id, ''),
        1, NEW.size
    )
    ON CONFLICT DO UPDATE SET jobs = jobs + 1, bytes = bytes + excluded.bytes;
END;

INSERT INTO job_counts
SELECT status, content_type, worker_id IS NOT NULL, ifnull(worker_id, ''), count(*), sum(size)
FROM jobs GROUP BY 1, 2, 3, 4;
