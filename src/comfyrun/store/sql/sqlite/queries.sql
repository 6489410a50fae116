-- Named queries of the SQLite store (`-- name: x` starts query x). Parameters are :named.

-- name: ping
SELECT 1 AS ok;

-- name: probe_write
-- readiness: a write that changes nothing, committed (store.writable)
UPDATE schema_version SET applied_at = applied_at
WHERE version = (SELECT max(version) FROM schema_version);

-- name: insert_job
INSERT INTO jobs (
    id, status, priority, inputs, options, metadata, owner, attempts, max_retries,
    retry_delay_s, timeout_s, idempotency_key, request_hash, created_at, next_run_at, started_at,
    finished_at, expires_at, worker_id, lease_expires_at, backend, prompt_id, progress, outputs,
    error, batch_id, fair_key, fair_tag, rank_at, type, params
) VALUES (
    :id, :status, :priority, :inputs, :options, :metadata, :owner, :attempts,
    :max_retries, :retry_delay_s, :timeout_s, :idempotency_key, :request_hash, :created_at,
    :next_run_at, :started_at, :finished_at, :expires_at, :worker_id, :lease_expires_at,
    :backend, :prompt_id, :progress, :outputs, :error, :batch_id, :fair_key, :fair_tag, :rank_at,
    :type, :params
)
ON CONFLICT (id) DO NOTHING;

-- name: insert_workflow
-- The workflow of a job insert_job has just inserted (its own table: 0014_job_workflows).
INSERT INTO job_workflows (job_id, workflow) VALUES (:id, :workflow)
ON CONFLICT (job_id) DO NOTHING;

-- name: get_key
SELECT job_id, request_hash, created_at FROM idempotency_keys WHERE scope = :scope AND key = :key;

-- name: bind_key
INSERT INTO idempotency_keys (scope, key, job_id, request_hash, created_at)
VALUES (:scope, :key, :job_id, :request_hash, :created_at)
ON CONFLICT (scope, key) DO UPDATE SET
    job_id = excluded.job_id, request_hash = excluded.request_hash,
    created_at = excluded.created_at;

-- name: insert_event
INSERT INTO job_events (job_id, kind, data, created_at)
VALUES (:job_id, :kind, :data, :created_at)
RETURNING id;

-- name: claim
UPDATE jobs SET
    status = 'running',
    attempts = attempts + 1,
    worker_id = :worker_id,
    lease_expires_at = :lease_expires_at,
    started_at = :now
WHERE id = (
    -- INDEXED BY: never let a planner without statistics sort every queued job instead
    SELECT id FROM jobs INDEXED BY jobs_claim
    WHERE status = 'queued' AND next_run_at <= :now
    ORDER BY priority DESC, fair_tag, rank_at, id
    LIMIT 1
)
RETURNING *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow;

-- name: claim_window
-- The first runnable jobs in claim order, for a claim that chooses among them (ClaimChoice).
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs INDEXED BY jobs_claim
WHERE status = 'queued' AND next_run_at <= :now
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT :window;

-- name: any_queued
-- Is any job queued? (enqueue_claimed hands a new job over only when none waits.)
SELECT id FROM jobs INDEXED BY jobs_claim WHERE status = 'queued' LIMIT 1;

-- name: claim_id
UPDATE jobs SET
    status = 'running',
    attempts = attempts + 1,
    worker_id = :worker_id,
    lease_expires_at = :lease_expires_at,
    started_at = :now
WHERE id = :id AND status = 'queued'
RETURNING *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow;

-- name: fair_head
-- The tag the next claim at this priority takes (the queue's virtual time).
SELECT fair_tag AS tag FROM jobs INDEXED BY jobs_claim
WHERE status = 'queued' AND priority = :priority AND next_run_at <= :now
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT 1;

-- name: fair_last
-- The last tag a group has queued at this priority.
SELECT fair_tag AS tag FROM jobs INDEXED BY jobs_fair
WHERE status = 'queued' AND fair_key = :fair_key AND priority = :priority
ORDER BY fair_tag DESC
LIMIT 1;

-- name: renew
UPDATE jobs SET lease_expires_at = :lease_expires_at
WHERE id = :id AND worker_id = :worker_id AND status IN ('running', 'canceling');

-- name: transition
UPDATE jobs SET
    status = :status,
    error = CASE WHEN :clear_error THEN NULL ELSE COALESCE(:error, error) END,
    progress = COALESCE(:progress, progress),
    next_run_at = COALESCE(:next_run_at, next_run_at),
    started_at = COALESCE(:started_at, started_at),
    finished_at = COALESCE(:finished_at, finished_at),
    expires_at = COALESCE(:expires_at, expires_at),
    backend = COALESCE(:backend, backend),
    prompt_id = COALESCE(:prompt_id, prompt_id),
    execution_started_at = COALESCE(:execution_started_at, execution_started_at),
    lease_expires_at = CASE WHEN :clear_lease THEN NULL ELSE lease_expires_at END,
    worker_id = CASE WHEN :clear_worker THEN NULL ELSE worker_id END,
    attempts = max(0, attempts - :uncount)
WHERE id = :id AND status = :expect AND (:worker_id IS NULL OR worker_id = :worker_id)
RETURNING *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow;

-- name: set_progress
UPDATE jobs SET progress = :progress WHERE id = :id;

-- name: add_output
UPDATE jobs SET outputs = json_insert(outputs, '$[#]', json(:output)) WHERE id = :id
RETURNING *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow;

-- name: append_output
-- add_output inside a transition, which returns the job at its end (no row read back here).
UPDATE jobs SET outputs = json_insert(outputs, '$[#]', json(:output)) WHERE id = :id;

-- name: lock_job
-- (the write transaction already holds SQLite's one write lock)
SELECT 1 AS found FROM jobs WHERE id = :id;

-- name: events_since
SELECT id, job_id, kind, data, created_at FROM job_events
WHERE job_id = :job_id AND id > :after_id
ORDER BY id;

-- name: get
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs WHERE id = :id;

-- name: get_by_prompt_id
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs WHERE prompt_id = :prompt_id ORDER BY created_at DESC LIMIT 1;

-- name: unfinished_for_client
-- The unfinished jobs submitted with a ComfyUI client id, newest first (the partial index
-- jobs_comfy_client: the same expression and status condition).
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs
WHERE json_extract(metadata, '$.comfy_client_id') = :client_id
  AND status IN ('queued', 'running', 'canceling')
  AND (:owner IS NULL OR owner = :owner)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: queue_active
-- The running and canceling jobs (bounded by the backends' slots), claimed first first: the
-- head of a listing of the queue (`queue`), read from the columns it shows.
SELECT id, status, type, created_at, started_at, execution_started_at, options, metadata,
    outputs, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow
FROM jobs
WHERE status IN ('running', 'canceling')
  AND (:owner IS NULL OR owner = :owner)
ORDER BY started_at, id
LIMIT :limit;

-- name: queue_queued
-- The queued jobs in claim order, the head of the queue first, off the claim index (no sort;
-- it stops at the limit): the rest of a listing of the queue.
SELECT id, status, type, created_at, started_at, execution_started_at, options, metadata,
    outputs, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow
FROM jobs INDEXED BY jobs_claim
WHERE status = 'queued'
  AND (:owner IS NULL OR owner = :owner)
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT :limit;

-- name: queue_queued_bare
-- The queued jobs in claim order, the head of the queue first, off the claim index (no sort;
-- it stops at the limit): the rest of a listing of the queue.
-- _bare: without their workflow, options and metadata (read by queue_bodies when needed).
SELECT id, status, type, created_at, started_at, execution_started_at, outputs
FROM jobs INDEXED BY jobs_claim
WHERE status = 'queued'
  AND (:owner IS NULL OR owner = :owner)
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT :limit;

-- name: queue_bodies
SELECT id, options, metadata, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND (:owner IS NULL OR owner = :owner);

-- name: list
-- Newest first; the cursor is the last row's (created_at, id).
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs
WHERE (:owner IS NULL OR owner = :owner)
  AND (:after_created IS NULL OR (created_at, id) < (:after_created, :after_id))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_status
-- One status, newest first, straight off the index (the store merges several statuses).
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs INDEXED BY jobs_status_newest
WHERE status = :status
  AND (:owner IS NULL OR owner = :owner)
  AND (:after_created IS NULL OR (created_at, id) < (:after_created, :after_id))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: stamps_status
-- list_status, without the rows: what tells a job's versions apart (JobStore.stamps).
SELECT id, status, created_at, finished_at, attempts FROM jobs INDEXED BY jobs_status_newest
WHERE status = :status
  AND (:owner IS NULL OR owner = :owner)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: get_many
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs WHERE id IN (SELECT value FROM json_each(:ids));

-- name: queue_position
-- Jobs claimed before a runnable job: runnable ones earlier in claim order, counted over two
-- ranges of the claim index that end at the job (higher priorities; its own priority, before
-- it), so a job near the front is not compared with the whole queue behind it.
-- :limit caps each count (-1: no cap), so a deep queue is not counted to its end.
SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_claim
      WHERE status = 'queued' AND priority > :priority AND next_run_at <= :now
      LIMIT :limit) AS higher)
    + (SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_claim
      WHERE status = 'queued' AND priority = :priority
        AND (fair_tag, rank_at, id) < (:fair_tag, :rank_at, :id) AND next_run_at <= :now
      LIMIT :limit) AS earlier) AS ahead;

-- name: queue_position_capped
-- queue_position up to :limit (> :first >= 1; the caller keeps it within 0..:limit), for a
-- runnable job, in one statement. Counting the jobs ahead compares each with the job; walking
-- the runnable ones compares none (about a fifth of the cost a row). So it counts the jobs
-- behind the job, up to :first. A job with fewer behind it (a new one, at the back) is all the
-- runnable jobs but itself and those behind it: the queued jobs (job_counts, kept by
-- triggers) less the waiting ones (jobs_waiting), read without a walk while fewer than :first
-- wait; with more waiting, it is past the cap when there are more than :limit + :first
-- runnable jobs (one walk of that many), else the runnable ones are counted. Any other job is
-- counted ahead, up to :limit.
WITH behind AS (SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_claim
      WHERE status = 'queued' AND priority < :priority AND next_run_at <= :now
      LIMIT :first) AS lower_priority)
    + (SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_claim
      WHERE status = 'queued' AND priority = :priority
        AND (fair_tag, rank_at, id) > (:fair_tag, :rank_at, :id) AND next_run_at <= :now
      LIMIT :first) AS lower_same) AS n),
waiting AS (SELECT count(*) AS n FROM (SELECT 1 FROM jobs INDEXED BY jobs_waiting
      WHERE status = 'queued' AND next_run_at > :now
      LIMIT :first) AS later)
SELECT CASE
  WHEN behind.n < :first AND waiting.n < :first THEN
    (SELECT coalesce(sum(n), 0) FROM job_counts WHERE status = 'queued')
      - waiting.n - behind.n - 1
  WHEN behind.n < :first THEN
    CASE WHEN EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_claim
        WHERE status = 'queued' AND next_run_at <= :now
        ORDER BY priority DESC, fair_tag, rank_at, id
        LIMIT 1 OFFSET :limit + :first)
      THEN :limit
      ELSE (SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_claim
          WHERE status = 'queued' AND next_run_at <= :now) AS runnable) - behind.n - 1
    END
  ELSE (SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_claim
      WHERE status = 'queued' AND priority > :priority AND next_run_at <= :now
      LIMIT :limit) AS higher_priority)
    + (SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_claim
      WHERE status = 'queued' AND priority = :priority
        AND (fair_tag, rank_at, id) < (:fair_tag, :rank_at, :id) AND next_run_at <= :now
      LIMIT :limit) AS higher_same)
END AS ahead FROM behind, waiting;

-- name: queue_position_late
-- Jobs claimed before one waiting for its next_run_at: every runnable job, and the waiting
-- ones earlier in claim order.
-- :limit caps the count (-1: no cap), so a deep queue is not counted to its end.
SELECT count(*) AS ahead FROM (SELECT 1 FROM jobs INDEXED BY jobs_claim
WHERE status = 'queued'
  AND (next_run_at <= :now
       OR priority > :priority
       OR (priority = :priority
           AND (fair_tag, rank_at, id) < (:fair_tag, :rank_at, :id)))
    LIMIT :limit) AS ahead_of_it;

-- name: counts
-- Jobs per status, from the counts the triggers keep (job_counts): a row per owner and status.
SELECT status, sum(n) AS n FROM job_counts GROUP BY status;

-- name: counts_unfinished
SELECT status, sum(n) AS n FROM job_counts
WHERE status IN ('queued', 'running', 'canceling')
GROUP BY status;

-- name: counts_of_owner
-- An API key's jobs per status.
SELECT status, n FROM job_counts WHERE owner = :owner;

-- name: counts_unfinished_of_owner
SELECT status, n FROM job_counts
WHERE owner = :owner AND status IN ('queued', 'running', 'canceling');

-- name: retrying
-- Unfinished jobs in retry (store.retrying: an attempt failed or was lost; they run again).
-- The WHERE is jobs_in_retry's, word for word: the count reads that small index alone.
SELECT count(*) AS n FROM jobs INDEXED BY jobs_in_retry
WHERE (status = 'queued' AND attempts >= 1) OR (status IN ('running', 'canceling') AND attempts >= 2);

-- name: retrying_of_owner
SELECT count(*) AS n FROM jobs INDEXED BY jobs_in_retry
WHERE owner = :owner AND ((status = 'queued' AND attempts >= 1) OR (status IN ('running', 'canceling') AND attempts >= 2));

-- name: finished_since
-- The jobs that ended since a watermark, in the order they ended (the metrics' histograms).
SELECT id, status, created_at, started_at, finished_at FROM jobs INDEXED BY jobs_finished
WHERE finished_at >= :after
ORDER BY finished_at, id
LIMIT :limit;

-- name: oldest_queued_at
SELECT min(created_at) AS oldest FROM jobs WHERE status = 'queued';

-- name: oldest_queued_at_of_owner
SELECT min(created_at) AS oldest FROM jobs WHERE owner = :owner AND status = 'queued';

-- name: expired_leases
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs INDEXED BY jobs_lease
WHERE status IN ('running', 'canceling') AND lease_expires_at < :now
ORDER BY lease_expires_at;

-- name: stuck
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs WHERE status = 'running' AND started_at < :before ORDER BY started_at;

-- name: expiring
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs
WHERE status IN ('succeeded', 'failed', 'canceled') AND expires_at <= :now
ORDER BY expires_at;

-- name: delete_job
DELETE FROM jobs WHERE id = :id;

-- name: delete_events
DELETE FROM job_events WHERE job_id = :id;

-- name: delete_as_read
-- A finished job replaced by a new one of its id (store.replacing), only while it is as it was
-- read (its stamp): no row once it changed (submitted again, expired) or went.
DELETE FROM jobs
WHERE id = :id AND status = :status AND created_at = :created_at
  AND finished_at IS :finished_at AND attempts = :attempts
  AND status IN ('succeeded', 'failed', 'canceled', 'expired');

-- name: delete_finished_before
DELETE FROM jobs
WHERE status IN ('succeeded', 'failed', 'canceled', 'expired') AND finished_at < :cutoff
RETURNING *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow;

-- name: delete_events_of
DELETE FROM job_events WHERE job_id IN (SELECT value FROM json_each(:ids));

-- name: insert_event_quiet
INSERT INTO job_events (job_id, kind, data, created_at)
VALUES (:job_id, :kind, :data, :created_at);

-- name: insert_event_many
-- One event of a bulk change (this process's waiters are woken after the commit).
INSERT INTO job_events (job_id, kind, data, created_at)
VALUES (:job_id, :kind, :data, :created_at);

-- name: insert_batch
INSERT INTO batches (id, workflow, version, status, total, options, metadata, owner, created_at,
    finished_at)
VALUES (:id, :workflow, :version, :status, :total, :options, :metadata, :owner, :created_at,
    :finished_at);

-- name: get_batch
SELECT * FROM batches WHERE id = :id;

-- name: lock_batch
-- (the write transaction already holds SQLite's one write lock)
SELECT * FROM batches WHERE id = :id;

-- name: open_batches
SELECT * FROM batches INDEXED BY batches_open
WHERE status IN ('running', 'canceling') ORDER BY created_at;

-- name: batch_counts
SELECT status, count(*) AS n FROM jobs INDEXED BY jobs_batch_status
WHERE batch_id = :id GROUP BY status;

-- name: batch_open_jobs
SELECT count(*) AS n FROM (SELECT 1 FROM jobs INDEXED BY jobs_batch_status
WHERE batch_id = :id AND status IN ('queued', 'running', 'canceling') LIMIT 1) AS open_jobs;

-- name: batch_jobs
-- A batch's jobs in item order; the cursor is the last row's (created_at, id).
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs INDEXED BY jobs_batch_order
WHERE batch_id = :id
  AND (:after_created IS NULL OR (created_at, id) > (:after_created, :after_id))
ORDER BY created_at, id
LIMIT :limit;

-- name: batch_active_jobs
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs INDEXED BY jobs_batch_status
WHERE batch_id = :id AND status IN ('running', 'canceling');

-- name: set_batch_status
UPDATE batches SET status = :status, finished_at = :finished_at
WHERE id = :id AND status = :expect;

-- name: delete_batches_before
-- Ended batches (their jobs ended before them) go with their jobs' retention.
DELETE FROM batches WHERE status IN ('completed', 'canceled') AND finished_at < :cutoff
RETURNING id;

-- name: cancel_batch_queued
UPDATE jobs SET status = 'canceled', finished_at = :now
WHERE batch_id = :id AND status = 'queued'
RETURNING id, attempts;

-- name: put_catalog
-- A backend's catalog, replaced only by one fetched later (two workers may race).
INSERT INTO backend_catalogs (
    backend, comfyui_version, fetched_at, object_info, models, embeddings, features
) VALUES (
    :backend, :comfyui_version, :fetched_at, :object_info, :models, :embeddings, :features
)
ON CONFLICT (backend) DO UPDATE SET
    comfyui_version = excluded.comfyui_version,
    fetched_at = excluded.fetched_at,
    object_info = excluded.object_info,
    models = excluded.models,
    embeddings = excluded.embeddings,
    features = excluded.features
WHERE backend_catalogs.fetched_at <= excluded.fetched_at;

-- name: catalogs
SELECT * FROM backend_catalogs ORDER BY backend;

-- name: catalog_stamps
SELECT backend, fetched_at FROM backend_catalogs ORDER BY backend;

-- name: delete_catalog
DELETE FROM backend_catalogs WHERE backend = :backend;

-- API keys and quotas ----------------------------------------------------------------------

-- name: insert_api_key
INSERT INTO api_keys (id, name, key_hash, scopes, max_queued, per_minute, created_at)
VALUES (:id, :name, :key_hash, :scopes, :max_queued, :per_minute, :created_at);

-- name: api_key
SELECT * FROM api_keys WHERE id = :id;

-- name: api_key_by_hash
SELECT * FROM api_keys WHERE key_hash = :key_hash;

-- name: api_keys
SELECT * FROM api_keys ORDER BY created_at, id;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL;

-- name: lock_api_key
-- (the write transaction already holds SQLite's one write lock)
SELECT * FROM api_keys WHERE id = :id;

-- name: quota_recent
-- A key's newest submissions since :since, no more than its per_minute (:cap); the oldest of
-- them leaving the window is when the next submission fits.
SELECT count(*) AS n, min(created_at) AS oldest FROM (
    SELECT created_at FROM jobs INDEXED BY jobs_owner_newest 
    WHERE owner = :owner AND created_at > :since
    ORDER BY created_at DESC
    LIMIT :cap
) AS recent;

-- name: count_submission
-- :n submissions of a key (one job, or a batch's jobs) counted, and its unfinished jobs.
UPDATE api_keys SET jobs_submitted = jobs_submitted + :n, unfinished = unfinished + :n
WHERE id = :id;

-- name: settle_key
-- A key's job left its backend (:seconds of use) and/or ended (:ended is 1).
UPDATE api_keys SET gpu_seconds = gpu_seconds + :seconds, unfinished = unfinished - :ended
WHERE id = :id;

-- The webhook outbox -----------------------------------------------------------------------

-- name: insert_delivery
INSERT INTO webhook_outbox (id, job_id, event, url, secret, created_at, next_attempt_at)
VALUES (:id, :job_id, :event, :url, :secret, :created_at, :next_attempt_at);

-- name: claim_deliveries
UPDATE webhook_outbox SET lease_holder = :holder, lease_expires_at = :lease_expires_at
WHERE id IN (
    SELECT id FROM webhook_outbox INDEXED BY webhook_outbox_due
    WHERE state = 'pending' AND next_attempt_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY next_attempt_at
    LIMIT :limit
)
RETURNING *;

-- name: record_attempt
UPDATE webhook_outbox SET
    attempts = json_insert(attempts, '$[#]', json(:attempt)),
    state = :state,
    next_attempt_at = COALESCE(:next_attempt_at, next_attempt_at),
    delivered_at = :delivered_at,
    payload = COALESCE(payload, :payload),
    lease_holder = NULL,
    lease_expires_at = NULL
WHERE id = :id AND lease_holder = :holder
RETURNING *;

-- name: deliveries_of_job
SELECT * FROM webhook_outbox WHERE job_id = :job_id ORDER BY created_at, id;

-- name: delivery_counts
SELECT state, count(*) AS n FROM webhook_outbox GROUP BY state;

-- name: prune_deliveries
DELETE FROM webhook_outbox WHERE state != 'pending' AND created_at < :before;

-- name: set_placement
UPDATE jobs SET
    backend = :backend,
    prompt_id = :prompt_id,
    execution_started_at = :execution_started_at
WHERE id = :id AND worker_id = :worker_id AND status IN ('running', 'canceling');

-- name: next_priority
SELECT priority FROM jobs INDEXED BY jobs_claim
WHERE status = 'queued' AND next_run_at <= :now
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT 1;

-- name: announce_worker
INSERT INTO workers (id, types, seen_at) VALUES (:id, :types, :seen_at)
ON CONFLICT (id) DO UPDATE SET types = excluded.types, seen_at = excluded.seen_at;

-- name: retire_worker
DELETE FROM workers WHERE id = :id;

-- name: served_types
SELECT DISTINCT value AS type FROM workers, json_each(workers.types) WHERE seen_at >= :since;

-- name: claim_comfy
-- `claim` among comfy jobs (a worker that claims only the types it serves, none chosen among):
-- the claim index walked in claim order, jobs of other types in between skipped; one statement
-- where the window and the claim by id were two.
UPDATE jobs SET
    status = 'running',
    attempts = attempts + 1,
    worker_id = :worker_id,
    lease_expires_at = :lease_expires_at,
    started_at = :now
WHERE id = (
    SELECT id FROM jobs INDEXED BY jobs_claim
    WHERE status = 'queued' AND type = 'comfy' AND next_run_at <= :now
    ORDER BY priority DESC, fair_tag, rank_at, id
    LIMIT 1
)
RETURNING *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow;

-- name: claim_type
-- `claim` among the jobs of one handler type: its range of the type-led index, in claim order.
UPDATE jobs SET
    status = 'running',
    attempts = attempts + 1,
    worker_id = :worker_id,
    lease_expires_at = :lease_expires_at,
    started_at = :now
WHERE id = (
    SELECT id FROM jobs INDEXED BY jobs_claim_type
    WHERE status = 'queued' AND type = :type AND next_run_at <= :now
    ORDER BY priority DESC, fair_tag, created_at, id
    LIMIT 1
)
RETURNING *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow;

-- name: claim_window_comfy
-- `claim_window` among comfy jobs: the claim index walked in claim order (a comfy job's rank_at
-- may run ahead of its submission), jobs of other types in between skipped.
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs INDEXED BY jobs_claim
WHERE status = 'queued' AND type = 'comfy' AND next_run_at <= :now
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT :window;

-- name: claim_window_type
-- `claim_window` among the jobs of one handler type: its range of the type-led index, in
-- claim order (a handler job ranks at its submission: rank_at = created_at).
SELECT *, (SELECT workflow FROM job_workflows WHERE job_id = jobs.id) AS workflow FROM jobs INDEXED BY jobs_claim_type
WHERE status = 'queued' AND type = :type AND next_run_at <= :now
ORDER BY priority DESC, fair_tag, created_at, id
LIMIT :window;

-- name: next_priority_type
-- `next_priority` among the jobs of one type (the type-led index orders by priority first).
SELECT priority FROM jobs INDEXED BY jobs_claim_type
WHERE status = 'queued' AND type = :type AND next_run_at <= :now
ORDER BY priority DESC
LIMIT 1;
