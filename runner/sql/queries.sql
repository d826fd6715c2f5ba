-- Every statement of the queue, in one place. runner/queue.py loads them by name.
-- Rules: each is one short transaction; every write after the claim is conditional on
-- the claim token, so a worker whose lease expired can never overwrite the state of the
-- worker that reclaimed the job; every status change writes one job_events row in the
-- same statement (the trigger announces it with NOTIFY).

-- name: enqueue
INSERT INTO jobs (queue, kind, priority, run_after, max_attempts, repo_url, base_ref,
                  branch, prompt, payload, config)
VALUES (%(queue)s, %(kind)s, %(priority)s, coalesce(%(run_after)s, now()), %(max_attempts)s,
        %(repo_url)s, %(base_ref)s, %(branch)s, %(prompt)s, %(payload)s, %(config)s)
RETURNING *;

-- name: requeue_expired
-- Jobs whose owner stopped renewing its lease (crash, SIGKILL, network split) go back to
-- the queue; the attempt it used stays counted, so a job that kills its worker every
-- time ends failed instead of looping for ever. A claimed/running row without any lease
-- was not claimed by a runner (a web app wrote the status itself): it would otherwise
-- sit there for ever, so it is treated as expired too.
WITH expired AS (
    SELECT id, claimed_by AS lost_worker, lease_until IS NULL AS no_lease
    FROM jobs
    WHERE status IN ('claimed', 'running') AND (lease_until < now() OR lease_until IS NULL)
    FOR UPDATE SKIP LOCKED
), updated AS (
    UPDATE jobs j
    SET status = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'queued' END,
        error = CASE WHEN j.attempts >= j.max_attempts
                     THEN format('worker %%s stopped renewing its lease during attempt %%s of %%s; no attempts left',
                                 expired.lost_worker, j.attempts, j.max_attempts)
                     ELSE j.error END,
        finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        claim_token = NULL, claimed_by = NULL, claimed_pid = NULL, lease_until = NULL,
        run_after = now(), updated_at = now()
    FROM expired
    WHERE j.id = expired.id
    RETURNING j.id, j.status, j.attempts, expired.lost_worker, expired.no_lease
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s,
       CASE status WHEN 'queued' THEN 'lease_expired' ELSE 'failed' END,
       jsonb_build_object('lost_worker', lost_worker, 'attempts', attempts,
                          'reason', CASE WHEN no_lease
                                         THEN 'claimed or running without a lease (not set by a runner)'
                                         ELSE 'lease expired' END)
FROM updated
RETURNING job_id;

-- name: claim
-- One statement: pick the first queued job in (priority DESC, created_at, id) order that
-- is due and in one of our queues, skipping rows another worker is claiming right now.
-- Its COMMIT does not wait for the WAL flush (no_flush; why: Queue.claim).
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), candidate AS (
    SELECT id
    FROM jobs
    WHERE status = 'queued' AND run_after <= now() AND queue = ANY(%(queues)s)
    ORDER BY priority DESC, created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j
    SET status = 'claimed', claim_token = gen_random_uuid(), claimed_by = %(worker_id)s,
        claimed_pid = %(pid)s, claimed_at = now(), started_at = NULL, finished_at = NULL,
        lease_until = now() + make_interval(secs => %(lease_seconds)s),
        attempts = j.attempts + 1, updated_at = now()
    FROM candidate
    WHERE j.id = candidate.id
    RETURNING j.*
), event AS (
    INSERT INTO job_events (job_id, worker_id, event, detail)
    SELECT id, %(worker_id)s, 'claimed',
           jsonb_build_object('attempt', attempts, 'max_attempts', max_attempts)
    FROM claimed
)
SELECT claimed.* FROM claimed, no_flush;  -- referenced, or PostgreSQL never evaluates it

-- name: mark_running
WITH updated AS (
    UPDATE jobs
    SET status = 'running', started_at = now(), worktree_path = %(worktree_path)s,
        updated_at = now()
    WHERE id = %(id)s AND claim_token = %(token)s AND status = 'claimed'
    RETURNING id
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s, 'running', %(detail)s FROM updated
RETURNING job_id;

-- name: renew_lease
-- The heartbeat. No row back means the claim is lost. cancel_requested rides along.
UPDATE jobs
SET lease_until = now() + make_interval(secs => %(lease_seconds)s)
WHERE id = %(id)s AND claim_token = %(token)s AND status IN ('claimed', 'running')
RETURNING cancel_requested, lease_until;

-- name: finish
-- A recorded end: succeeded, failed, blocked or cancelled.
WITH updated AS (
    UPDATE jobs
    SET status = %(status)s, result = %(result)s, error = %(error)s, finished_at = now(),
        claim_token = NULL, lease_until = NULL, updated_at = now()
    WHERE id = %(id)s AND claim_token = %(token)s AND status IN ('claimed', 'running')
    RETURNING id, status
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s, status, %(detail)s FROM updated
RETURNING job_id;

-- name: requeue
-- Back to the queue under our own claim: a rollback (crash, SIGTERM, token expiry, usage
-- limit — refund_attempt gives the attempt back) or a retry after a backoff.
WITH updated AS (
    UPDATE jobs
    SET status = 'queued',
        attempts = CASE WHEN %(refund_attempt)s THEN greatest(attempts - 1, 0) ELSE attempts END,
        run_after = greatest(now(), coalesce(%(run_after)s, now())),
        result = coalesce(%(result)s, result), error = %(error)s,
        claim_token = NULL, claimed_by = NULL, claimed_pid = NULL, lease_until = NULL,
        started_at = NULL, updated_at = now()
    WHERE id = %(id)s AND claim_token = %(token)s AND status IN ('claimed', 'running')
    RETURNING id, attempts, run_after
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s, %(event)s,
       %(detail)s || jsonb_build_object('attempts', attempts, 'run_after', run_after)
FROM updated
RETURNING job_id;

-- name: request_cancel
-- A queued job is cancelled at once; a claimed or running one is flagged, and its
-- worker's heartbeat stops the agent.
WITH updated AS (
    UPDATE jobs
    SET cancel_requested = true,
        status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
        finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
        error = CASE WHEN status = 'queued' THEN 'cancelled before it started' ELSE error END,
        updated_at = now()
    WHERE id = %(id)s AND status IN ('queued', 'claimed', 'running')
    RETURNING id, status
), event AS (
    INSERT INTO job_events (job_id, worker_id, event, detail)
    SELECT id, %(worker_id)s::text,
           CASE status WHEN 'cancelled' THEN 'cancelled' ELSE 'cancel_requested' END,
           jsonb_build_object('by', %(by)s::text)
    FROM updated
)
SELECT id, status FROM updated;

-- name: retry
-- An operator sends a failed, cancelled or blocked job round again with fresh attempts.
WITH updated AS (
    UPDATE jobs
    SET status = 'queued', attempts = 0, run_after = now(), cancel_requested = false,
        error = NULL, finished_at = NULL, updated_at = now()
    WHERE id = %(id)s AND status IN ('failed', 'cancelled', 'blocked')
    RETURNING id
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s::text, 'retried', jsonb_build_object('by', %(by)s::text) FROM updated
RETURNING job_id;

-- name: prune_finished
-- Keeps the hot table small: finished jobs older than the retention go, with their
-- events (ON DELETE CASCADE). In batches, skipping rows someone else is touching.
WITH doomed AS (
    SELECT id FROM jobs
    WHERE status IN ('succeeded', 'failed', 'blocked', 'cancelled')
      AND finished_at < now() - make_interval(secs => %(days)s * 86400)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM jobs j USING doomed WHERE j.id = doomed.id
RETURNING j.id;

-- name: held_by_worker
-- What a previous iteration of this worker may have left behind when it crashed.
SELECT id, claim_token, claimed_pid, status, attempts, max_attempts
FROM jobs
WHERE claimed_by = %(worker_id)s AND status IN ('claimed', 'running');

-- name: get_job
SELECT * FROM jobs WHERE id = %(id)s;

-- name: list_jobs
SELECT id, queue, kind, status, priority, attempts, max_attempts, claimed_by,
       created_at, updated_at, finished_at, error
FROM jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
ORDER BY created_at DESC
LIMIT %(limit)s;

-- name: job_events
SELECT id, at, worker_id, event, detail FROM job_events WHERE job_id = %(id)s ORDER BY id;

-- name: worker_seen
INSERT INTO workers (id, host, pid, version, state, current_job, queues, last_seen_at, started_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(version)s, %(state)s, %(current_job)s, %(queues)s, now(), now())
ON CONFLICT (id) DO UPDATE
SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
    state = EXCLUDED.state, current_job = EXCLUDED.current_job, queues = EXCLUDED.queues,
    last_seen_at = now();

-- name: list_workers
SELECT id, host, pid, version, state, current_job, queues, last_seen_at, started_at,
       last_seen_at < now() - interval '1 minute' AS gone
FROM workers
ORDER BY last_seen_at DESC;

-- name: touch_worker
-- Presence only: the worker is alive (while it waits for work, and on each heartbeat).
UPDATE workers SET last_seen_at = now() WHERE id = %(id)s;

-- name: job_status
SELECT status FROM jobs WHERE id = %(id)s;

-- name: job_ids_by_prefix
-- `runner logs <prefix>`: a prefix of the id's text form, as an operator copies it.
SELECT id FROM jobs WHERE id::text LIKE %(prefix)s || '%%' ORDER BY created_at DESC LIMIT 10;

-- name: job_counts
-- /metrics: how many jobs in each status, per queue.
SELECT queue, status, count(*) AS n FROM jobs GROUP BY queue, status;

-- name: worker_event_counts
-- /metrics: what this worker did, by event (job_events is append-only).
SELECT event, count(*) AS n FROM job_events WHERE worker_id = %(worker_id)s GROUP BY event;

-- name: claim_latencies
-- /metrics: seconds from "due" (created, or run_after when later) to claimed, for jobs
-- claimed in the last window; a requeued job's older claim is not counted.
SELECT extract(epoch FROM claimed_at - greatest(created_at, run_after))::float8 AS seconds
FROM jobs
WHERE claimed_at > now() - make_interval(secs => %(window_seconds)s)
  AND status <> 'queued' AND claimed_at >= greatest(created_at, run_after)
ORDER BY claimed_at DESC
LIMIT 10000;

-- name: prune_workers
-- `runner workers --prune`: rows of workers not seen for a while (ad-hoc one_job runs,
-- replaced containers); a live worker writes its row again at its next iteration.
DELETE FROM workers
WHERE last_seen_at < now() - make_interval(secs => %(older_than_seconds)s)
RETURNING id;

-- name: runner_faults
-- How often the runner itself failed on this job and handed it back (attempt refunded):
-- a job that crashes the runner every time must end, not loop for ever.
SELECT count(*) AS faults FROM job_events
WHERE job_id = %(id)s AND event = 'rolled_back' AND detail->>'runner_fault' = 'true';
