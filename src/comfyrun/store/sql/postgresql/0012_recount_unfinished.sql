-- Each API key's unfinished count (its jobs queued, running or canceling, which max_queued
-- bounds) recounted from its jobs: a finished job's expiry counted the job out a second time
-- (store.tenancy.plan_ends), so a key whose jobs had expired held a count below its unfinished
-- jobs (negative, one a job) and max_queued let that many more jobs through.
UPDATE api_keys SET unfinished = (
    SELECT count(*) FROM jobs
    WHERE jobs.owner = api_keys.id AND jobs.status IN ('queued', 'running', 'canceling')
);
