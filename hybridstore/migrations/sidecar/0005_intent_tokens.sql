-- A write commits its job's row and its intent together, before touching the files, and
-- the intent is cleared lazily, by the writing process's next write transaction. The token
-- names one write, so that clearing it later cannot clear a newer write's intent of the
-- same job.
ALTER TABLE intents ADD COLUMN token TEXT NOT NULL DEFAULT '';
