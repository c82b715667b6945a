-- Facts about the sidecar itself. "boot_id" is the kernel boot the index was last checked
-- under: the index is not fsynced (the job files are), so after a crash of the machine
-- (a new boot id) the first open rebuilds it from the files.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
