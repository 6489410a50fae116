-- Named queries of the PostgreSQL store (`-- name: x` starts query x). Parameters are
-- %(named)s; those that may be NULL carry a cast so the server knows their type.

-- name: ping
SELECT 1 AS ok;

-- name: probe_write
-- readiness: a write that changes nothing, committed (store.writable)
UPDATE schema_version SET applied_at = applied_at
WHERE version = (SELECT max(version) FROM schema_version);

-- name: insert_job
INSERT INTO jobs (
    id, status, priority, workflow, inputs, options, metadata, owner, attempts, max_retries,
    retry_delay_s, timeout_s, idempotency_key, request_hash, created_at, next_run_at, started_at,
    finished_at, expires_at, worker_id, lease_expires_at, backend, prompt_id, progress, outputs,
    error, batch_id, fair_key, fair_tag, rank_at, type, params
) VALUES (
    %(id)s, %(status)s, %(priority)s, %(workflow)s::jsonb, %(inputs)s::jsonb,
    %(options)s::jsonb, %(metadata)s::jsonb, %(owner)s::text, %(attempts)s, %(max_retries)s,
    %(retry_delay_s)s, %(timeout_s)s::float8, %(idempotency_key)s::text,
    %(request_hash)s::text, %(created_at)s, %(next_run_at)s, %(started_at)s::float8,
    %(finished_at)s::float8, %(expires_at)s::float8, %(worker_id)s::text,
    %(lease_expires_at)s::float8, %(backend)s::text, %(prompt_id)s::text,
    %(progress)s::jsonb, %(outputs)s::jsonb, %(error)s::jsonb, %(batch_id)s::text,
    %(fair_key)s::text, %(fair_tag)s::float8, %(rank_at)s::float8, %(type)s, %(params)s::jsonb
)
ON CONFLICT (id) DO NOTHING;

-- name: enqueue_plain
-- A job of no group, owner or idempotency key queued in one statement (one round trip, its own
-- transaction): its fair tag is the queue's head at its priority (as fair_head, else 0), then
-- its first event, with the NOTIFY. No row when the id is taken.
WITH job AS (
    INSERT INTO jobs (
        id, status, priority, workflow, inputs, options, metadata, owner, attempts,
        max_retries, retry_delay_s, timeout_s, idempotency_key, request_hash, created_at,
        next_run_at, started_at, finished_at, expires_at, worker_id, lease_expires_at, backend,
        prompt_id, progress, outputs, error, batch_id, fair_key, fair_tag, rank_at, type, params
    ) VALUES (
        %(id)s, %(status)s, %(priority)s, %(workflow)s::jsonb, %(inputs)s::jsonb,
        %(options)s::jsonb, %(metadata)s::jsonb, %(owner)s::text, %(attempts)s,
        %(max_retries)s, %(retry_delay_s)s, %(timeout_s)s::float8, %(idempotency_key)s::text,
        %(request_hash)s::text, %(created_at)s, %(next_run_at)s, %(started_at)s::float8,
        %(finished_at)s::float8, %(expires_at)s::float8, %(worker_id)s::text,
        %(lease_expires_at)s::float8, %(backend)s::text, %(prompt_id)s::text,
        %(progress)s::jsonb, %(outputs)s::jsonb, %(error)s::jsonb, %(batch_id)s::text,
        %(fair_key)s::text,
        COALESCE((
            SELECT fair_tag FROM jobs
            WHERE status = 'queued' AND priority = %(priority)s::integer
              AND next_run_at <= %(created_at)s::float8
            ORDER BY priority DESC, fair_tag, rank_at, id
            LIMIT 1
        ), 0.0),
        %(rank_at)s::float8, %(type)s, %(params)s::jsonb
    )
    ON CONFLICT (id) DO NOTHING
    RETURNING id, fair_tag
), event AS (
    INSERT INTO job_events (job_id, kind, data, created_at)
    SELECT id, 'status', %(event)s::jsonb, %(created_at)s FROM job
    RETURNING id
)
SELECT job.fair_tag, event.id AS event_id, pg_notify(%(channel)s, %(payload)s)
FROM job, event;

-- name: lock_key
SELECT pg_advisory_xact_lock(hashtext(%(scope)s), hashtext(%(key)s));

-- name: get_key
SELECT job_id, request_hash, created_at FROM idempotency_keys
WHERE scope = %(scope)s AND key = %(key)s;

-- name: bind_key
INSERT INTO idempotency_keys (scope, key, job_id, request_hash, created_at)
VALUES (%(scope)s, %(key)s, %(job_id)s, %(request_hash)s::text, %(created_at)s)
ON CONFLICT (scope, key) DO UPDATE SET
    job_id = excluded.job_id, request_hash = excluded.request_hash,
    created_at = excluded.created_at;

-- name: insert_event
-- Appends and notifies in one round trip; the NOTIFY is delivered when the transaction commits.
WITH event AS (
    INSERT INTO job_events (job_id, kind, data, created_at)
    VALUES (%(job_id)s, %(kind)s, %(data)s::jsonb, %(created_at)s)
    RETURNING id
)
SELECT event.id, pg_notify(%(channel)s, %(payload)s) FROM event;

-- name: append_one
-- An event appended in one statement, its own transaction (PostgresStore.append_event): the
-- job's row locked first (so that its event ids commit in the order they were drawn, as
-- lock_job does in a transaction), the event, and its NOTIFY. No row when the job is gone.
WITH job AS (
    SELECT id FROM jobs WHERE id = %(job_id)s FOR NO KEY UPDATE
), event AS (
    INSERT INTO job_events (job_id, kind, data, created_at)
    SELECT job.id, %(kind)s, %(data)s::jsonb, %(created_at)s FROM job
    RETURNING id
)
SELECT event.id, pg_notify(%(channel)s, %(payload)s) FROM event;

-- name: progress_one
-- A job's progress in one statement, its own transaction (PostgresStore.record_progress): the
-- snapshot set (the row locked by the UPDATE), its "progress" event, and its NOTIFY. No row
-- when the job is gone.
WITH job AS (
    UPDATE jobs SET progress = %(data)s::jsonb WHERE id = %(job_id)s RETURNING id
), event AS (
    INSERT INTO job_events (job_id, kind, data, created_at)
    SELECT job.id, 'progress', %(data)s::jsonb, %(created_at)s FROM job
    RETURNING id
)
SELECT event.id, pg_notify(%(channel)s, %(payload)s) FROM event;

-- name: claim
-- SKIP LOCKED: concurrent claimers each take a different job instead of queueing on one row.
UPDATE jobs SET
    status = 'running',
    attempts = attempts + 1,
    worker_id = %(worker_id)s,
    lease_expires_at = %(lease_expires_at)s,
    started_at = %(now)s
WHERE status = 'queued' AND id = (
    SELECT id FROM jobs
    WHERE status = 'queued' AND next_run_at <= %(now)s
    ORDER BY priority DESC, fair_tag, rank_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING *;

-- name: claim_window
-- The first runnable jobs in claim order, for a claim that chooses among them (ClaimChoice);
-- not locked: the one chosen is taken by claim_id, which waits for a claimer that holds it
-- and takes it only if it is still queued. (Locking the window, SKIP LOCKED, made every other
-- worker's claim meanwhile skip up to `window` jobs it could have taken, find nothing, and
-- wait for the next job's NOTIFY: a burst's last jobs waited for the idle timeout.)
SELECT * FROM jobs
WHERE status = 'queued' AND next_run_at <= %(now)s::float8
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT %(window)s::integer;

-- name: any_queued
-- Is any job queued? (enqueue_claimed hands a new job over only when none waits.)
SELECT id FROM jobs WHERE status = 'queued' LIMIT 1;

-- name: claim_id
UPDATE jobs SET
    status = 'running',
    attempts = attempts + 1,
    worker_id = %(worker_id)s,
    lease_expires_at = %(lease_expires_at)s,
    started_at = %(now)s
WHERE id = %(id)s AND status = 'queued'
RETURNING *;

-- name: fair_head
-- The tag the next claim at this priority takes (the queue's virtual time).
SELECT fair_tag AS tag FROM jobs
WHERE status = 'queued' AND priority = %(priority)s::integer AND next_run_at <= %(now)s::float8
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT 1;

-- name: fair_last
-- The last tag a group has queued at this priority.
SELECT fair_tag AS tag FROM jobs
WHERE status = 'queued' AND fair_key = %(fair_key)s::text AND priority = %(priority)s::integer
ORDER BY fair_tag DESC
LIMIT 1;

-- name: renew
UPDATE jobs SET lease_expires_at = %(lease_expires_at)s
WHERE id = %(id)s AND worker_id = %(worker_id)s AND status IN ('running', 'canceling');

-- name: transition
UPDATE jobs SET
    status = %(status)s,
    error = CASE WHEN %(clear_error)s THEN NULL ELSE COALESCE(%(error)s::jsonb, error) END,
    progress = COALESCE(%(progress)s::jsonb, progress),
    next_run_at = COALESCE(%(next_run_at)s::float8, next_run_at),
    started_at = COALESCE(%(started_at)s::float8, started_at),
    finished_at = COALESCE(%(finished_at)s::float8, finished_at),
    expires_at = COALESCE(%(expires_at)s::float8, expires_at),
    backend = COALESCE(%(backend)s::text, backend),
    prompt_id = COALESCE(%(prompt_id)s::text, prompt_id),
    execution_started_at = COALESCE(
        %(execution_started_at)s::double precision, execution_started_at
    ),
    lease_expires_at = CASE WHEN %(clear_lease)s THEN NULL ELSE lease_expires_at END,
    worker_id = CASE WHEN %(clear_worker)s THEN NULL ELSE worker_id END,
    attempts = GREATEST(0, attempts - %(uncount)s::integer),
    outputs = CASE WHEN %(outputs)s::jsonb IS NULL THEN outputs ELSE outputs || %(outputs)s::jsonb END
WHERE id = %(id)s AND status = %(expect)s
  AND (%(worker_id)s::text IS NULL OR worker_id = %(worker_id)s::text)
RETURNING *;

-- name: set_progress
UPDATE jobs SET progress = %(progress)s::jsonb WHERE id = %(id)s;

-- name: add_output
UPDATE jobs SET outputs = outputs || jsonb_build_array(%(output)s::jsonb) WHERE id = %(id)s
RETURNING *;

-- name: append_output
-- add_output inside a transition, which returns the job at its end (no row read back here).
UPDATE jobs SET outputs = outputs || jsonb_build_array(%(output)s::jsonb) WHERE id = %(id)s;

-- name: lock_job
-- Appending an event holds the job's row lock, so a job's event ids commit in order.
SELECT 1 AS found FROM jobs WHERE id = %(id)s FOR NO KEY UPDATE;

-- name: events_since
SELECT id, job_id, kind, data, created_at FROM job_events
WHERE job_id = %(job_id)s AND id > %(after_id)s
ORDER BY id;

-- name: get
SELECT * FROM jobs WHERE id = %(id)s;

-- name: get_by_prompt_id
SELECT * FROM jobs WHERE prompt_id = %(prompt_id)s ORDER BY created_at DESC LIMIT 1;

-- name: unfinished_for_client
-- The unfinished jobs submitted with a ComfyUI client id, newest first (the partial index
-- jobs_comfy_client: the same expression and status condition).
SELECT * FROM jobs
WHERE (metadata ->> 'comfy_client_id') = %(client_id)s
  AND status IN ('queued', 'running', 'canceling')
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: queue_active
-- The running and canceling jobs (bounded by the backends' slots), claimed first first: the
-- head of a listing of the queue (`queue`), read from the columns it shows.
SELECT id, status, type, created_at, started_at, execution_started_at, workflow, options, metadata,
    outputs
FROM jobs
WHERE status IN ('running', 'canceling')
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
ORDER BY started_at, id
LIMIT %(limit)s;

-- name: queue_queued
-- The queued jobs in claim order, the head of the queue first, off the claim index (no sort;
-- it stops at the limit): the rest of a listing of the queue.
SELECT id, status, type, created_at, started_at, execution_started_at, workflow, options, metadata,
    outputs
FROM jobs
WHERE status = 'queued'
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT %(limit)s;

-- name: queue_queued_bare
-- The queued jobs in claim order, the head of the queue first, off the claim index (no sort;
-- it stops at the limit): the rest of a listing of the queue.
-- _bare: without their workflow, options and metadata (read by queue_bodies when needed).
SELECT id, status, type, created_at, started_at, execution_started_at, outputs
FROM jobs
WHERE status = 'queued'
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT %(limit)s;

-- name: queue_bodies
SELECT id, workflow, options, metadata FROM jobs
WHERE id = ANY(%(ids)s::text[]) AND (%(owner)s::text IS NULL OR owner = %(owner)s::text);

-- name: list
-- Newest first; the cursor is the last row's (created_at, id).
SELECT * FROM jobs
WHERE (%(owner)s::text IS NULL OR owner = %(owner)s::text)
  AND (%(after_created)s::float8 IS NULL
       OR (created_at, id) < (%(after_created)s::float8, %(after_id)s::text))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: list_status
-- One status, newest first, straight off the index (the store merges several statuses).
SELECT * FROM jobs
WHERE status = %(status)s
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
  AND (%(after_created)s::float8 IS NULL
       OR (created_at, id) < (%(after_created)s::float8, %(after_id)s::text))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: stamps_status
-- list_status, without the rows: what tells a job's versions apart (JobStore.stamps).
SELECT id, status, created_at, finished_at, attempts FROM jobs
WHERE status = %(status)s
  AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: get_many
SELECT * FROM jobs WHERE id = ANY(%(ids)s::text[]);

-- name: queue_position
-- Jobs claimed before a runnable job: runnable ones earlier in claim order, counted over two
-- ranges of the claim index that end at the job (higher priorities; its own priority, before
-- it), so a job near the front is not compared with the whole queue behind it.
-- %(limit)s caps each count (NULL: no cap), so a deep queue is not counted to its end.
SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs
      WHERE status = 'queued' AND priority > %(priority)s::integer AND next_run_at <= %(now)s::float8
      LIMIT %(limit)s::bigint) AS higher)
    + (SELECT count(*) FROM (SELECT 1 FROM jobs
      WHERE status = 'queued' AND priority = %(priority)s::integer
        AND (fair_tag, rank_at, id) < (%(fair_tag)s::float8, %(rank_at)s::float8, %(id)s::text) AND next_run_at <= %(now)s::float8
      LIMIT %(limit)s::bigint) AS earlier) AS ahead;

-- name: queue_position_capped
-- queue_position up to %(limit)s (> %(first)s >= 1; the caller keeps it within 0..%(limit)s), for a
-- runnable job, in one statement. Counting the jobs ahead compares each with the job; walking
-- the runnable ones compares none (about a fifth of the cost a row). So it counts the jobs
-- behind the job, up to %(first)s. A job with fewer behind it (a new one, at the back) is past
-- the cap when there are more than %(limit)s + %(first)s runnable jobs (one walk of that many), else
-- it is all the runnable jobs but itself and those behind it; any other is counted ahead, up
-- to %(limit)s.
WITH behind AS (SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs
      WHERE status = 'queued' AND priority < %(priority)s::integer AND next_run_at <= %(now)s::float8
      LIMIT %(first)s::bigint) AS lower_priority)
    + (SELECT count(*) FROM (SELECT 1 FROM jobs
      WHERE status = 'queued' AND priority = %(priority)s::integer
        AND (fair_tag, rank_at, id) > (%(fair_tag)s::float8, %(rank_at)s::float8, %(id)s::text) AND next_run_at <= %(now)s::float8
      LIMIT %(first)s::bigint) AS lower_same) AS n)
SELECT CASE
  WHEN behind.n < %(first)s::bigint THEN
    CASE WHEN EXISTS (SELECT 1 FROM jobs
        WHERE status = 'queued' AND next_run_at <= %(now)s::float8
        ORDER BY priority DESC, fair_tag, rank_at, id
        LIMIT 1 OFFSET %(limit)s::bigint + %(first)s::bigint)
      THEN %(limit)s::bigint
      ELSE (SELECT count(*) FROM (SELECT 1 FROM jobs
          WHERE status = 'queued' AND next_run_at <= %(now)s::float8) AS runnable) - behind.n - 1
    END
  ELSE (SELECT count(*) FROM (SELECT 1 FROM jobs
      WHERE status = 'queued' AND priority > %(priority)s::integer AND next_run_at <= %(now)s::float8
      LIMIT %(limit)s::bigint) AS higher_priority)
    + (SELECT count(*) FROM (SELECT 1 FROM jobs
      WHERE status = 'queued' AND priority = %(priority)s::integer
        AND (fair_tag, rank_at, id) < (%(fair_tag)s::float8, %(rank_at)s::float8, %(id)s::text) AND next_run_at <= %(now)s::float8
      LIMIT %(limit)s::bigint) AS higher_same)
END AS ahead FROM behind;

-- name: queue_position_late
-- Jobs claimed before one waiting for its next_run_at: every runnable job, and the waiting
-- ones earlier in claim order.
-- %(limit)s caps the count (NULL: no cap), so a deep queue is not counted to its end.
SELECT count(*) AS ahead FROM (SELECT 1 FROM jobs
WHERE status = 'queued'
  AND (next_run_at <= %(now)s::float8
       OR priority > %(priority)s::integer
       OR (priority = %(priority)s::integer
           AND (fair_tag, rank_at, id)
               < (%(fair_tag)s::float8, %(rank_at)s::float8, %(id)s::text)))
    LIMIT %(limit)s::bigint) AS ahead_of_it;

-- name: counts
SELECT status, count(*) AS n FROM jobs GROUP BY status;

-- name: counts_unfinished
SELECT status, count(*) AS n FROM jobs
WHERE status IN ('queued', 'running', 'canceling')
GROUP BY status;

-- name: counts_of_owner
-- An API key's jobs per status (index-only: jobs_owner_status).
SELECT status, count(*) AS n FROM jobs WHERE owner = %(owner)s GROUP BY status;

-- name: counts_unfinished_of_owner
SELECT status, count(*) AS n FROM jobs
WHERE owner = %(owner)s AND status IN ('queued', 'running', 'canceling')
GROUP BY status;

-- name: retrying
-- Unfinished jobs in retry (store.retrying: an attempt failed or was lost; they run again).
-- The WHERE is jobs_in_retry's: the count reads that small index alone.
SELECT count(*) AS n FROM jobs
WHERE (status = 'queued' AND attempts >= 1) OR (status IN ('running', 'canceling') AND attempts >= 2);

-- name: retrying_of_owner
SELECT count(*) AS n FROM jobs
WHERE owner = %(owner)s AND ((status = 'queued' AND attempts >= 1) OR (status IN ('running', 'canceling') AND attempts >= 2));

-- name: finished_since
-- The jobs that ended since a watermark, in the order they ended (the metrics' histograms).
SELECT id, status, created_at, started_at, finished_at FROM jobs
WHERE finished_at IS NOT NULL AND finished_at >= %(after)s
ORDER BY finished_at, id
LIMIT %(limit)s;

-- name: oldest_queued_at
SELECT min(created_at) AS oldest FROM jobs WHERE status = 'queued';

-- name: oldest_queued_at_of_owner
SELECT min(created_at) AS oldest FROM jobs WHERE owner = %(owner)s AND status = 'queued';

-- name: expired_leases
SELECT * FROM jobs
WHERE status IN ('running', 'canceling') AND lease_expires_at < %(now)s
ORDER BY lease_expires_at;

-- name: stuck
SELECT * FROM jobs WHERE status = 'running' AND started_at < %(before)s ORDER BY started_at;

-- name: expiring
SELECT * FROM jobs
WHERE status IN ('succeeded', 'failed', 'canceled') AND expires_at <= %(now)s
ORDER BY expires_at;

-- name: delete_job
DELETE FROM jobs WHERE id = %(id)s;

-- name: delete_events
DELETE FROM job_events WHERE job_id = %(id)s;

-- name: delete_as_read
-- A finished job replaced by a new one of its id (store.replacing), only while it is as it was
-- read (its stamp): no row once it changed (submitted again, expired) or went. A transaction
-- that replaces it meanwhile holds the row's lock: this one waits for it, then finds the row
-- it read deleted, and deletes nothing (the new row is not the one it looked for).
DELETE FROM jobs
WHERE id = %(id)s AND status = %(status)s AND created_at = %(created_at)s
  AND finished_at IS NOT DISTINCT FROM %(finished_at)s::float8 AND attempts = %(attempts)s
  AND status IN ('succeeded', 'failed', 'canceled', 'expired');

-- name: delete_finished_before
DELETE FROM jobs
WHERE status IN ('succeeded', 'failed', 'canceled', 'expired') AND finished_at < %(cutoff)s
RETURNING *;

-- name: delete_events_of
DELETE FROM job_events WHERE job_id = ANY(%(ids)s::text[]);

-- name: insert_events
-- A job's events of one change (a claim's, a transition's outputs and status) in one statement,
-- in the order given (`events`, a JSON array of [kind, data]: one parameter, not two arrays,
-- whose text form psycopg escapes character by character), and one NOTIFY for them all.
WITH event AS (
    INSERT INTO job_events (job_id, kind, data, created_at)
    SELECT %(job_id)s, e.event->>0, e.event->1, %(created_at)s
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS e(event, n)
    ORDER BY e.n
    RETURNING id
)
SELECT count(*) AS n, pg_notify(%(channel)s, %(payload)s) FROM event;

-- name: claim_one
-- A claim in one statement, its own transaction (PostgresStore.claim without a choice, over
-- every type or one): `{claim}` is claim_id of the job a claim_next query names, taken with
-- its status event (the `event` given, transition.claim_event, its attempts from the row)
-- and, when this is the job's first attempt, the note (`note_kind`, `note`), in that order,
-- and one NOTIFY (`prefix` || its id). The row stays locked until both events are written, so no
-- other change of the job logs an event between them. No row when no job is claimable.
WITH job AS (
    {claim}
), event AS (
    INSERT INTO job_events (job_id, kind, data, created_at)
    SELECT job.id, e.kind,
        CASE WHEN e.n = 1 THEN e.data || jsonb_build_object('attempts', job.attempts)
        ELSE e.data END,
        %(now)s
    FROM job, (VALUES (1, 'status', %(event)s::jsonb), (2, %(note_kind)s::text, %(note)s::jsonb))
        AS e(n, kind, data)
    WHERE e.n = 1 OR (e.data IS NOT NULL AND job.attempts = 1)
    ORDER BY e.n
    RETURNING id
)
SELECT job.*, pg_notify(%(channel)s, %(prefix)s || job.id) AS notified FROM job;

-- name: end_plain
-- A job's change of status in one statement, its own transaction (PostgresStore.transition):
-- `{transition}` (the transition query) for a job whose change settles nothing more than its
-- key's usage (no batch: no batch's end; no webhook: no delivery owed), with its events
-- (`events`, a JSON array of [kind, data]: its outputs', then the status event,
-- transition.status_event, its attempts from the row) in that order and one NOTIFY. An owned
-- job's key is settled as settle_key does it (store.tenancy): the time since the job's start
-- when the change takes it off its backend (`takes_off`), one unfinished job less when it ends
-- it (`ends`). No row when the job is not as expected or its change settles more: the caller
-- goes the general way.
WITH job AS (
    {transition}
), usage AS (
    UPDATE api_keys SET
        gpu_seconds = gpu_seconds + CASE WHEN %(takes_off)s AND job.started_at IS NOT NULL
            THEN GREATEST(0, %(now)s::float8 - job.started_at) ELSE 0 END,
        unfinished = unfinished - %(ends)s::integer
    FROM job
    WHERE api_keys.id = job.owner
      AND (%(ends)s::integer = 1 OR (%(takes_off)s AND job.started_at IS NOT NULL))
    RETURNING api_keys.id
), event AS (
    INSERT INTO job_events (job_id, kind, data, created_at)
    SELECT job.id, e.event->>0,
        CASE WHEN e.event->>0 = 'status'
            THEN (e.event->1) || jsonb_build_object('attempts', job.attempts)
        ELSE e.event->1 END,
        %(now)s
    FROM job, jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS e(event, n)
    ORDER BY e.n
    RETURNING id
)
SELECT job.*, pg_notify(%(channel)s, %(payload)s) AS notified FROM job;

-- name: claim_next
-- claim_one's candidate over every type: the head of the claim order, as `claim` takes it.
SELECT id FROM jobs
WHERE status = 'queued' AND next_run_at <= %(now)s::float8
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: claim_next_comfy
-- claim_one's candidate among comfy jobs, as claim_window_comfy orders them.
SELECT id FROM jobs
WHERE status = 'queued' AND type = 'comfy' AND next_run_at <= %(now)s::float8
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: claim_next_type
-- claim_one's candidate among the jobs of one handler type, as claim_window_type orders them.
SELECT id FROM jobs
WHERE status = 'queued' AND type = %(type)s AND next_run_at <= %(now)s::float8
ORDER BY priority DESC, fair_tag, created_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: insert_event_quiet
INSERT INTO job_events (job_id, kind, data, created_at)
VALUES (%(job_id)s, %(kind)s, %(data)s::jsonb, %(created_at)s);

-- name: insert_event_many
-- One event of a bulk change (many jobs canceled with their batch), with its NOTIFY.
WITH event AS (
    INSERT INTO job_events (job_id, kind, data, created_at)
    VALUES (%(job_id)s, %(kind)s, %(data)s::jsonb, %(created_at)s)
    RETURNING id
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM event;

-- name: insert_batch
INSERT INTO batches (id, workflow, version, status, total, options, metadata, owner, created_at,
    finished_at)
VALUES (%(id)s, %(workflow)s, %(version)s, %(status)s, %(total)s, %(options)s::jsonb,
    %(metadata)s::jsonb, %(owner)s::text, %(created_at)s, %(finished_at)s::float8);

-- name: get_batch
SELECT * FROM batches WHERE id = %(id)s;

-- name: lock_batch
-- Serialises the "did the batch just end?" checks of its jobs' transactions.
SELECT * FROM batches WHERE id = %(id)s FOR UPDATE;

-- name: open_batches
SELECT * FROM batches WHERE status IN ('running', 'canceling') ORDER BY created_at;

-- name: batch_counts
SELECT status, count(*) AS n FROM jobs WHERE batch_id = %(id)s GROUP BY status;

-- name: batch_open_jobs
SELECT count(*) AS n FROM (SELECT 1 FROM jobs
WHERE batch_id = %(id)s AND status IN ('queued', 'running', 'canceling') LIMIT 1) AS open_jobs;

-- name: batch_jobs
-- A batch's jobs in item order; the cursor is the last row's (created_at, id).
SELECT * FROM jobs
WHERE batch_id = %(id)s
  AND (%(after_created)s::float8 IS NULL
       OR (created_at, id) > (%(after_created)s::float8, %(after_id)s::text))
ORDER BY created_at, id
LIMIT %(limit)s;

-- name: batch_active_jobs
SELECT * FROM jobs WHERE batch_id = %(id)s AND status IN ('running', 'canceling');

-- name: set_batch_status
UPDATE batches SET status = %(status)s, finished_at = %(finished_at)s::float8
WHERE id = %(id)s AND status = %(expect)s;

-- name: delete_batches_before
-- Ended batches (their jobs ended before them) go with their jobs' retention.
DELETE FROM batches WHERE status IN ('completed', 'canceled') AND finished_at < %(cutoff)s
RETURNING id;

-- name: cancel_batch_queued
UPDATE jobs SET status = 'canceled', finished_at = %(now)s
WHERE batch_id = %(id)s AND status = 'queued'
RETURNING id, attempts;

-- name: put_catalog
-- A backend's catalog, replaced only by one fetched later (two workers may race).
INSERT INTO backend_catalogs (
    backend, comfyui_version, fetched_at, object_info, models, embeddings, features
) VALUES (
    %(backend)s, %(comfyui_version)s::text, %(fetched_at)s, %(object_info)s, %(models)s,
    %(embeddings)s, %(features)s
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
DELETE FROM backend_catalogs WHERE backend = %(backend)s;

-- API keys and quotas ----------------------------------------------------------------------

-- name: insert_api_key
INSERT INTO api_keys (id, name, key_hash, scopes, max_queued, per_minute, created_at)
VALUES (%(id)s, %(name)s, %(key_hash)s, %(scopes)s::jsonb, %(max_queued)s, %(per_minute)s,
        %(created_at)s);

-- name: api_key
SELECT * FROM api_keys WHERE id = %(id)s;

-- name: api_key_by_hash
SELECT * FROM api_keys WHERE key_hash = %(key_hash)s;

-- name: api_keys
SELECT * FROM api_keys ORDER BY created_at, id;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = %(now)s WHERE id = %(id)s AND revoked_at IS NULL;

-- name: lock_api_key
-- Serialises one key's submissions on every API node until the enqueue commits.
SELECT * FROM api_keys WHERE id = %(id)s FOR UPDATE;

-- name: quota_recent
-- A key's newest submissions since :since, no more than its per_minute (:cap); the oldest of
-- them leaving the window is when the next submission fits.
SELECT count(*) AS n, min(created_at) AS oldest FROM (
    SELECT created_at FROM jobs 
    WHERE owner = %(owner)s AND created_at > %(since)s
    ORDER BY created_at DESC
    LIMIT %(cap)s
) AS recent;

-- name: count_submission
-- :n submissions of a key (one job, or a batch's jobs) counted, and its unfinished jobs.
UPDATE api_keys SET jobs_submitted = jobs_submitted + %(n)s, unfinished = unfinished + %(n)s
WHERE id = %(id)s;

-- name: settle_key
-- A key's job left its backend (:seconds of use) and/or ended (:ended is 1).
UPDATE api_keys SET gpu_seconds = gpu_seconds + %(seconds)s, unfinished = unfinished - %(ended)s
WHERE id = %(id)s;

-- The webhook outbox -----------------------------------------------------------------------

-- name: insert_delivery
INSERT INTO webhook_outbox (id, job_id, event, url, secret, created_at, next_attempt_at)
VALUES (%(id)s, %(job_id)s, %(event)s, %(url)s, %(secret)s, %(created_at)s,
        %(next_attempt_at)s);

-- name: claim_deliveries
-- SKIP LOCKED: nodes claiming at once take different entries without waiting on each other.
UPDATE webhook_outbox SET lease_holder = %(holder)s, lease_expires_at = %(lease_expires_at)s
WHERE id IN (
    SELECT id FROM webhook_outbox
    WHERE state = 'pending' AND next_attempt_at <= %(now)s
      AND (lease_expires_at IS NULL OR lease_expires_at < %(now)s)
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING *;

-- name: record_attempt
UPDATE webhook_outbox SET
    attempts = attempts || jsonb_build_array(%(attempt)s::jsonb),
    state = %(state)s,
    next_attempt_at = COALESCE(%(next_attempt_at)s, next_attempt_at),
    delivered_at = %(delivered_at)s,
    payload = COALESCE(payload, %(payload)s),
    lease_holder = NULL,
    lease_expires_at = NULL
WHERE id = %(id)s AND lease_holder = %(holder)s
RETURNING *;

-- name: deliveries_of_job
SELECT * FROM webhook_outbox WHERE job_id = %(job_id)s ORDER BY created_at, id;

-- name: delivery_counts
SELECT state, count(*) AS n FROM webhook_outbox GROUP BY state;

-- name: prune_deliveries
DELETE FROM webhook_outbox WHERE state != 'pending' AND created_at < %(before)s;

-- name: set_placement
UPDATE jobs SET
    backend = %(backend)s,
    prompt_id = %(prompt_id)s,
    execution_started_at = %(execution_started_at)s
WHERE id = %(id)s AND worker_id = %(worker_id)s AND status IN ('running', 'canceling');

-- name: next_priority
SELECT priority FROM jobs
WHERE status = 'queued' AND next_run_at <= %(now)s
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT 1;

-- name: announce_worker
INSERT INTO workers (id, types, seen_at) VALUES (%(id)s, %(types)s::jsonb, %(seen_at)s)
ON CONFLICT (id) DO UPDATE SET types = excluded.types, seen_at = excluded.seen_at;

-- name: retire_worker
DELETE FROM workers WHERE id = %(id)s;

-- name: served_types
SELECT DISTINCT jsonb_array_elements_text(types) AS type FROM workers
WHERE seen_at >= %(since)s::float8;

-- name: claim_window_comfy
-- `claim_window` among comfy jobs, in claim order (a comfy job's rank_at may run ahead of its
-- submission); not locked, as claim_window.
SELECT * FROM jobs
WHERE status = 'queued' AND type = 'comfy' AND next_run_at <= %(now)s::float8
ORDER BY priority DESC, fair_tag, rank_at, id
LIMIT %(window)s::integer;

-- name: claim_window_type
-- `claim_window` among the jobs of one handler type: its range of the type-led index, in
-- claim order (a handler job ranks at its submission: rank_at = created_at); not locked, as
-- claim_window.
SELECT * FROM jobs
WHERE status = 'queued' AND type = %(type)s AND next_run_at <= %(now)s::float8
ORDER BY priority DESC, fair_tag, created_at, id
LIMIT %(window)s::integer;

-- name: next_priority_type
-- `next_priority` among the jobs of one type (the type-led index orders by priority first).
SELECT priority FROM jobs
WHERE status = 'queued' AND type = %(type)s AND next_run_at <= %(now)s::float8
ORDER BY priority DESC
LIMIT 1;
