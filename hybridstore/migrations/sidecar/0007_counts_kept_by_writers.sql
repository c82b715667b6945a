-- keeps rows: job_counts stays as it is; only who keeps it on an update changes.
-- A row update is counted by its writer (rows.CountChanges), once per status, content
-- type and worker for a whole batch, instead of by this trigger, three statements for
-- every row: the trigger was more than half the cost of the row update of a claim or a
-- finish, inside the section where the writers of every process wait for each other.
-- Inserts and deletes are still counted by their triggers.
DROP TRIGGER job_counts_update;
