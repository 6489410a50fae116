-- The jobs per owner and status, kept by triggers as jobs are inserted, change status or owner,
-- and are deleted: JobStore.counts reads these few rows instead of counting every job (93 ms
-- for a million on the store's one thread, which every other call waits behind; /metrics,
-- /api/v2/stats and RunPod's /health each count). owner '' stands for no owner (a key's id is
-- never empty).
CREATE TABLE job_counts (
    owner  TEXT NOT NULL,
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (owner, status)
) WITHOUT ROWID;

INSERT INTO job_counts (owner, status, n)
SELECT coalesce(owner, ''), status, count(*) FROM jobs GROUP BY coalesce(owner, ''), status;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_counts (owner, status, n) VALUES (coalesce(NEW.owner, ''), NEW.status, 1)
    ON CONFLICT (owner, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE owner = coalesce(OLD.owner, '') AND status = OLD.status;
END;

CREATE TRIGGER jobs_counted_update AFTER UPDATE OF status, owner ON jobs
WHEN OLD.status IS NOT NEW.status OR OLD.owner IS NOT NEW.owner
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE owner = coalesce(OLD.owner, '') AND status = OLD.status;
    INSERT INTO job_counts (owner, status, n) VALUES (coalesce(NEW.owner, ''), NEW.status, 1)
    ON CONFLICT (owner, status) DO UPDATE SET n = n + 1;
END;
