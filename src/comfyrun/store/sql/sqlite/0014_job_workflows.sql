-- A job's workflow in a table of its own, written once when the job is enqueued. SQLite
-- rewrites a whole row at every UPDATE, its overflow pages included: with the workflow in the
-- row, each of a job's status changes (claim, placement, end) wrote it again (a 34 KB workflow:
-- ~265 KiB written a job, ~70 without). Reads join it back by the job's id.
CREATE TABLE job_workflows (
    job_id   TEXT PRIMARY KEY,
    workflow TEXT NOT NULL
);
INSERT INTO job_workflows (job_id, workflow) SELECT id, workflow FROM jobs;
ALTER TABLE jobs DROP COLUMN workflow;
-- a job's workflow goes with it (a DELETE's RETURNING reads it before this runs)
CREATE TRIGGER jobs_workflow_delete AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_workflows WHERE job_id = OLD.id;
END;
