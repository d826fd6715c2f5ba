-- Every statement of the queue, in one place. runner/queue.py loads them by name.
-- Rules: each is one short transaction; every write after the claim is conditional on
-- the claim token, so a worker whose lease expired can never overwrite the state of the
-- worker that reclaimed the job; every status change writes one job_events row in the
-- same statement (the trigger announces it with NOTIFY).

-- name: enqueue
-- No row back: a not-finished job with this dedupe_key exists (a concurrent INSERT of the
-- same key waits here until the other transaction ends); open_job_by_dedupe_key finds it.
INSERT INTO jobs (queue, kind, priority, run_after, max_attempts, repo_url, base_ref,
                  branch, prompt, payload, config, dedupe_key, concurrency_key,
                  concurrency_limit, depends_on)
VALUES (%(queue)s, %(kind)s, %(priority)s, coalesce(%(run_after)s, now()), %(max_attempts)s,
        %(repo_url)s, %(base_ref)s, %(branch)s, %(prompt)s, %(payload)s, %(config)s,
        %(dedupe_key)s, %(concurrency_key)s, %(concurrency_limit)s, %(depends_on)s::uuid[])
ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'claimed', 'running') DO NOTHING
RETURNING *;

-- name: open_job_by_dedupe_key
-- A new statement, so a new snapshot: it sees the row whose INSERT made ours a no-op.
SELECT id FROM jobs
WHERE dedupe_key = %(dedupe_key)s AND status IN ('queued', 'claimed', 'running');

-- name: existing_job_ids
SELECT id FROM jobs WHERE id = ANY(%(ids)s::uuid[]);

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
-- is due and in one of our queues (not paused, nor paused for its agent by the guard),
-- skipping rows another worker is claiming right now;
-- whose dependencies have all succeeded; and, for a job with a concurrency key, that is
-- its key's oldest queued job while the key has a free slot.
--
-- The walk is over jobs_queued_heads: the queued jobs without a key and each key's head
-- (key_head, kept by the triggers of migration 0007: the key's oldest queued job, maybe a
-- requeued one too). A busy key costs the walk its head row, however long its backlog
-- (benchmarks/claim_keys.py, one long key first). The flag only narrows the walk: "no
-- earlier queued job of its key" below and the slot decide, so an extra flag costs a row,
-- never a second running job. A head an open enqueue transaction holds FOR SHARE (the
-- trigger's guard against losing the flag) is passed by SKIP LOCKED until it commits.
--
-- The slot is the race that matters: in READ COMMITTED every sub-select here reads the
-- snapshot taken when the statement began, which may be older than another worker's
-- committed claim of the same key. So the free slot is not trusted from the snapshot:
-- `slot` locks the key's concurrency_keys row (waiting for a worker that holds it) and
-- PostgreSQL re-checks `active < limit` on the row's newest committed version after the
-- wait. `active` is kept by the trigger on jobs (migration 0004), so it counts every claim
-- committed before ours. A claim that loses that race claims nothing and says so
-- (candidates = 1); Queue.claim then runs the statement again with a fresh snapshot.
-- Its COMMIT does not wait for the WAL flush (no_flush; why: Queue.claim). The claiming
-- worker's row says "running" with the job (presence), in the same statement.
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), candidate AS (
    SELECT j.id, j.concurrency_key,
           coalesce((%(limits)s::jsonb ->> j.concurrency_key)::int, j.concurrency_limit, 1)
               AS key_limit
    FROM jobs j
    LEFT JOIN concurrency_keys k ON k.key = j.concurrency_key
    WHERE j.status = 'queued' AND (j.concurrency_key IS NULL OR j.key_head)
      AND j.run_after <= now()
      -- our queues minus the paused ones (evaluated once, not per row)
      AND j.queue = ANY(ARRAY(SELECT q FROM unnest(%(queues)s::text[]) AS q
                              WHERE NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = q
                                                AND (p.until IS NULL OR p.until > now()))))
      -- nor a job whose agent the model API's overloads paused on its queue (runner/guard.py)
      AND NOT EXISTS (SELECT 1 FROM agent_pauses g
                      WHERE g.queue = j.queue AND g.until > now()
                        AND g.agent = coalesce(j.config ->> 'agent', %(default_agent)s))
      AND (j.depends_on IS NULL OR
           (SELECT count(*) FROM jobs d WHERE d.id = ANY(j.depends_on) AND d.status = 'succeeded')
               = cardinality(j.depends_on))
      -- (No pre-test of busy keys: the walk meets one head per busy key at most, and the
      -- list of busy keys cost a scan of concurrency_keys, which grows with every key ever
      -- used, on every claim.)
      AND (j.concurrency_key IS NULL OR (
           k.active < coalesce((%(limits)s::jsonb ->> j.concurrency_key)::int, j.concurrency_limit, 1)
           AND NOT EXISTS (SELECT 1 FROM jobs e
                           WHERE e.concurrency_key = j.concurrency_key AND e.status = 'queued'
                             AND e.enqueue_seq < j.enqueue_seq)))
    ORDER BY j.priority DESC, j.created_at, j.id
    LIMIT 1
    FOR UPDATE OF j SKIP LOCKED
), slot AS (
    -- scalar sub-selects, so the key's row is found by its primary key, not a join scan
    UPDATE concurrency_keys k SET active = k.active
    WHERE k.key = (SELECT concurrency_key FROM candidate)
      AND k.active < (SELECT key_limit FROM candidate)
    RETURNING k.key
), claimed AS (
    UPDATE jobs j
    SET status = 'claimed', claim_token = gen_random_uuid(), claimed_by = %(worker_id)s,
        claimed_pid = %(pid)s, claimed_at = now(), started_at = NULL, finished_at = NULL,
        lease_until = now() + make_interval(secs => %(lease_seconds)s),
        attempts = j.attempts + 1, updated_at = now()
    FROM candidate
    WHERE j.id = candidate.id
      AND (candidate.concurrency_key IS NULL OR EXISTS (SELECT 1 FROM slot))
    RETURNING j.*
), event AS (
    INSERT INTO job_events (job_id, worker_id, event, detail)
    SELECT id, %(worker_id)s, 'claimed',
           jsonb_build_object('attempt', attempts, 'max_attempts', max_attempts)
    FROM claimed
), presence AS (
    -- `runner workers` shows the job at once: the worker's row (written "starting" at the
    -- iteration's start) changes in the claim's own transaction, not in a statement of its
    -- own between the claim and the agent's start (benchmarks/agent_start.py).
    UPDATE workers w SET state = 'running', current_job = claimed.id, last_seen_at = now()
    FROM claimed
    WHERE w.id = %(worker_id)s
)
SELECT claimed.*, (SELECT count(*) FROM candidate) AS candidates
-- no_flush referenced, or PostgreSQL never evaluates it
FROM (SELECT 1) AS one CROSS JOIN no_flush LEFT JOIN claimed ON true;

-- name: fail_dependents
-- A queued job whose dependency ended failed or cancelled (or does not exist) can never
-- run: it ends failed saying which one, without being claimed — and so, in the same
-- statement, does every queued job that depends on it, however deep the chain.
WITH RECURSIVE doomed(id, reason) AS (
    SELECT j.id, CASE WHEN d.id IS NULL THEN format('dependency %%s does not exist', dep)
                      ELSE format('dependency %%s %%s', d.id, d.status) END
    FROM jobs j
    CROSS JOIN LATERAL unnest(j.depends_on) AS dep
    LEFT JOIN jobs d ON d.id = dep
    WHERE j.status = 'queued' AND j.depends_on IS NOT NULL
      AND (d.id IS NULL OR d.status IN ('failed', 'cancelled'))
    UNION
    SELECT j.id, format('dependency %%s failed', doomed.id)
    FROM doomed JOIN jobs j ON doomed.id = ANY(j.depends_on)
    WHERE j.status = 'queued' AND j.depends_on IS NOT NULL
), one_reason AS (
    SELECT DISTINCT ON (id) id, reason FROM doomed ORDER BY id, reason
), unlocked AS (
    -- A row someone holds is left for the next iteration rather than waited for: a key's
    -- head is held FOR SHARE by an open enqueue transaction of its key (migration 0007),
    -- for as long as the web app keeps that transaction open.
    SELECT j.id, r.reason FROM jobs j JOIN one_reason r ON r.id = j.id
    WHERE j.status = 'queued'
    FOR NO KEY UPDATE OF j SKIP LOCKED
), updated AS (
    UPDATE jobs j
    SET status = 'failed', error = r.reason || ', so this job did not run',
        finished_at = now(), updated_at = now()
    FROM unlocked r
    WHERE j.id = r.id AND j.status = 'queued'
    RETURNING j.id, r.reason
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s, 'failed', jsonb_build_object('error', reason || ', so this job did not run')
FROM updated
RETURNING job_id;

-- name: flush_wal
-- Status changes the runner makes (mark_running, finish, requeue) COMMIT without waiting
-- for the disk (no_flush), and Queue then runs flush_wal, whose durable COMMIT flushes
-- the WAL up to and including theirs before the runner acts on them — in the same
-- round trip, as the next transaction of one pipeline (Queue._announced). Why: a transaction
-- that sent a NOTIFY (the status trigger's) holds PostgreSQL's global notify lock from
-- its pre-commit until its commit is done, WAL flush included; so every announced commit
-- waited for the disk one at a time. Now only the short commit is serialised, and the
-- flushes (no NOTIFY) group-commit (docs/live.md, benchmarks/claim_throughput.py).
-- The smallest durable transaction: a transactional logical-decoding message (an XID and
-- one WAL record; no table, any role, any wal_level — txid_current() alone writes no WAL,
-- and PostgreSQL does not wait for the disk at a COMMIT that wrote none). Its COMMIT waits
-- for the WAL flush up to it, so every earlier COMMIT of this session is on disk when it
-- returns. Logical decoding consumers see it with the prefix runner_flush, empty.
SELECT pg_logical_emit_message(true, 'runner_flush', '') AS lsn;

-- name: warm_up_job
-- Queue.warm_up's own job, inserted already claimed — never 'queued', so it is never in
-- the claim's index (jobs_queued_heads), where even a dead entry would cost every later
-- claim a visit until vacuum (benchmarks/peers.py showed +1.7 ms) — and rolled back.
INSERT INTO jobs (queue, status, claim_token, claimed_by, claimed_at, lease_until, attempts)
VALUES (%(queue)s, 'claimed', gen_random_uuid(), %(worker_id)s, now(), now() + interval '1 minute', 1)
RETURNING id, claim_token;

-- name: mark_running
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), updated AS (
    UPDATE jobs
    SET status = 'running', started_at = now(), worktree_path = %(worktree_path)s,
        updated_at = now()
    WHERE id = %(id)s AND claim_token = %(token)s AND status = 'claimed'
    RETURNING id
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s, 'running', %(detail)s FROM updated, no_flush
RETURNING job_id;

-- name: renew_lease
-- The heartbeat. No row back means the claim is lost. cancel_requested rides along.
UPDATE jobs
SET lease_until = now() + make_interval(secs => %(lease_seconds)s)
WHERE id = %(id)s AND claim_token = %(token)s AND status IN ('claimed', 'running')
RETURNING cancel_requested, lease_until;

-- name: claim_state
-- The heartbeat's check when a notification names its job (a hint, never proof): no row
-- means the claim is lost; cancel_requested says whether to stop. Changes nothing.
SELECT cancel_requested, lease_until
FROM jobs
WHERE id = %(id)s AND claim_token = %(token)s AND status IN ('claimed', 'running');

-- name: progress
-- A progress snapshot of a running job (runner/progress.py), from the heartbeat's thread:
-- the latest in jobs.progress, every one a job_events row, announced with event
-- 'progress'. Under the claim token, like every write after the claim.
WITH updated AS (
    UPDATE jobs SET progress = %(progress)s || jsonb_build_object('at', now())
    WHERE id = %(id)s AND claim_token = %(token)s AND status = 'running'
    RETURNING id, queue, status, progress
), event AS (
    INSERT INTO job_events (job_id, worker_id, event, detail)
    SELECT id, %(worker_id)s, 'progress', progress FROM updated
)
SELECT pg_notify('runner_jobs', json_build_object('id', id, 'queue', queue, 'status', status,
                                                  'event', 'progress')::text) AS notified
FROM updated;

-- name: finish
-- A recorded end: succeeded, failed, blocked or cancelled.
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), updated AS (
    UPDATE jobs
    SET status = %(status)s, result = %(result)s, error = %(error)s, finished_at = now(),
        claim_token = NULL, lease_until = NULL, updated_at = now()
    WHERE id = %(id)s AND claim_token = %(token)s AND status IN ('claimed', 'running')
    RETURNING id, status
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s, status, %(detail)s FROM updated, no_flush
RETURNING job_id;

-- name: requeue
-- Back to the queue under our own claim: a rollback (crash, SIGTERM, token expiry, usage
-- limit — refund_attempt gives the attempt back) or a retry after a backoff.
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), updated AS (
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
FROM updated, no_flush
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
-- An operator sends a failed, cancelled or blocked job round again with fresh attempts
-- (and no answer: one given earlier was for an attempt number that now comes round again).
WITH updated AS (
    UPDATE jobs
    SET status = 'queued', attempts = 0, run_after = now(), cancel_requested = false,
        error = NULL, finished_at = NULL, answer = NULL, updated_at = now()
    WHERE id = %(id)s AND status IN ('failed', 'cancelled', 'blocked')
    RETURNING id
)
INSERT INTO job_events (job_id, worker_id, event, detail)
SELECT id, %(worker_id)s::text, 'retried', jsonb_build_object('by', %(by)s::text) FROM updated
RETURNING job_id;

-- name: dedupe_key_holder
-- The unfinished job that holds the dedupe_key of job `id` (why `retry` was refused).
SELECT o.id, o.status, o.dedupe_key FROM jobs j
JOIN jobs o ON o.dedupe_key = j.dedupe_key AND o.id <> j.id
           AND o.status IN ('queued', 'claimed', 'running')
WHERE j.id = %(id)s
LIMIT 1;

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
       created_at, updated_at, finished_at, error, progress
FROM jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
ORDER BY created_at DESC
LIMIT %(limit)s;

-- name: job_events
SELECT id, at, worker_id, event, detail FROM job_events WHERE job_id = %(id)s ORDER BY id;

-- name: worker_seen
-- Presence is not worth a WAL flush: its COMMIT does not wait for the disk (lost in a
-- server crash, the next one rewrites it). "running" is said between the claim and the
-- agent's start, where a flush would be on the path (benchmarks/agent_start.py).
INSERT INTO workers (id, host, pid, version, state, current_job, queues, last_seen_at, started_at)
SELECT %(id)s::text, %(host)s::text, %(pid)s::int, %(version)s::text, %(state)s::text,
       %(current_job)s::uuid, %(queues)s::jsonb, now(), now()
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_flush
ON CONFLICT (id) DO UPDATE
SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
    state = EXCLUDED.state, current_job = EXCLUDED.current_job, queues = EXCLUDED.queues,
    last_seen_at = now();

-- name: list_workers
-- With the job a worker runs: its progress snapshot and how long it has run.
SELECT w.id, w.host, w.pid, w.version, w.state, w.current_job, w.queues, w.last_seen_at,
       w.started_at, w.last_seen_at < now() - interval '1 minute' AS gone,
       j.progress, extract(epoch FROM now() - j.started_at)::float8 AS job_seconds
FROM workers w
LEFT JOIN jobs j ON j.id = w.current_job AND j.status IN ('claimed', 'running')
ORDER BY w.last_seen_at DESC;

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

-- name: overload_hand_backs
-- How often the job went back because the model API was overloaded (runner/guard.py): a
-- job the API fails every time must end, not be refunded for ever.
SELECT count(*) AS count FROM job_events
WHERE job_id = %(id)s AND event = 'rolled_back' AND detail->>'overloaded' = 'true';

-- name: runner_faults
-- How often the runner itself failed on this job and handed it back (attempt refunded):
-- a job that crashes the runner every time must end, not loop for ever.
SELECT count(*) AS faults FROM job_events
WHERE job_id = %(id)s AND event = 'rolled_back' AND detail->>'runner_fault' = 'true';

-- name: webhook_next
-- One due delivery, leased for a while (another worker skips it; a crash before it is
-- marked sends it again after the lease: at least once, with the same delivery id).
WITH due AS (
    SELECT id FROM webhook_outbox
    WHERE delivered_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_outbox o
SET attempts = o.attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease_seconds)s)
FROM due
WHERE o.id = due.id
RETURNING o.id, o.job_id, o.event, o.body, o.attempts, o.created_at;

-- name: webhook_delivered
UPDATE webhook_outbox
SET delivered_at = now(), last_status = %(status)s, last_error = NULL
WHERE id = %(id)s;

-- name: webhook_failed
UPDATE webhook_outbox
SET next_attempt_at = now() + make_interval(secs => %(retry_seconds)s),
    last_status = %(status)s, last_error = %(error)s
WHERE id = %(id)s;

-- name: webhook_deliveries
-- `runner show`: a job's webhook deliveries.
SELECT id, event, created_at, attempts, delivered_at, last_status, last_error, next_attempt_at
FROM webhook_outbox WHERE job_id = %(id)s ORDER BY created_at;

-- name: webhook_pending
-- /metrics: deliveries not yet made, and how old the oldest is (the app down for how long).
SELECT count(*) AS n,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_seconds
FROM webhook_outbox WHERE delivered_at IS NULL;

-- name: pause_queue
-- No worker claims from a paused queue (the claim leaves it out); jobs already running go on.
INSERT INTO queue_pauses (queue, until, reason, paused_by)
VALUES (%(queue)s, %(until)s, %(reason)s, %(by)s)
ON CONFLICT (queue) DO UPDATE
SET until = EXCLUDED.until, reason = EXCLUDED.reason, paused_by = EXCLUDED.paused_by,
    paused_at = now()
RETURNING queue, until, reason, paused_by, paused_at;

-- name: resume_queue
-- The operator's pause and the automatic ones of the queue's agents (runner/guard.py).
WITH operator AS (
    DELETE FROM queue_pauses WHERE queue = %(queue)s RETURNING queue
), automatic AS (
    DELETE FROM agent_pauses WHERE queue = %(queue)s AND until > now() RETURNING queue
)
SELECT queue FROM operator UNION ALL SELECT queue FROM automatic;

-- name: active_pauses
-- Both kinds: an operator's (agent NULL) and the model API's overloads (per agent).
SELECT queue, NULL::text AS agent, until, reason, paused_by, paused_at FROM queue_pauses
WHERE until IS NULL OR until > now()
UNION ALL
SELECT queue, agent, until, last_error AS reason, 'runner: the model API is overloaded' AS paused_by,
       updated_at AS paused_at
FROM agent_pauses WHERE until > now()
ORDER BY queue, agent NULLS FIRST;

-- name: guard_strike
-- One run of `agent` on `queue` ended with the model API overloaded (runner/guard.py):
-- counted in the current window, or the first of a new one once the window is over. A job
-- counts once per window: one job that the API fails again and again (a request it cannot
-- serve) is that job's problem, not the fleet's, and pauses nobody.
INSERT INTO agent_pauses AS g (queue, agent, strikes, struck_jobs, window_started_at, last_error)
VALUES (%(queue)s, %(agent)s, 1, ARRAY[%(job)s::uuid], now(), %(error)s)
ON CONFLICT (queue, agent) DO UPDATE
SET strikes = CASE WHEN g.window_started_at <= now() - make_interval(secs => %(window_seconds)s) THEN 1
                   WHEN %(job)s::uuid = ANY (g.struck_jobs) THEN g.strikes
                   ELSE g.strikes + 1 END,
    struck_jobs = CASE WHEN g.window_started_at <= now() - make_interval(secs => %(window_seconds)s)
                       THEN ARRAY[%(job)s::uuid]
                       WHEN %(job)s::uuid = ANY (g.struck_jobs) THEN g.struck_jobs
                       ELSE (g.struck_jobs || %(job)s::uuid)[1:1000] END,
    window_started_at = CASE WHEN g.window_started_at > now() - make_interval(secs => %(window_seconds)s)
                             THEN g.window_started_at ELSE now() END,
    last_error = EXCLUDED.last_error, updated_at = now()
RETURNING strikes, pauses, until, coalesce(until > now(), false) AS paused;

-- name: guard_trip
-- Pause the agent on the queue for `seconds`, unless a pause is on already (another
-- worker's strike tripped it first: the row's newest version is re-checked after its lock).
UPDATE agent_pauses
SET until = now() + make_interval(secs => %(seconds)s), pauses = pauses + 1, strikes = 0,
    struck_jobs = '{}', window_started_at = now(), updated_at = now()
WHERE queue = %(queue)s AND agent = %(agent)s AND (until IS NULL OR until <= now())
RETURNING until, pauses;

-- name: guard_clear
-- A run of the agent on the queue got its answers from the model API: the guard is lifted.
DELETE FROM agent_pauses WHERE queue = %(queue)s AND agent = %(agent)s RETURNING pauses;

-- name: guard_states
-- Every guard row, paused or counting (runner health, docs/operations.md).
SELECT queue, agent, strikes, window_started_at, pauses, until, coalesce(until > now(), false) AS paused,
       last_error, updated_at
FROM agent_pauses ORDER BY queue, agent;

-- name: answer
-- `runner answer` (the web app runs the same function, docs/live.md): a blocked job goes
-- back to the queue with the answer for its next attempt, its attempt given back. No row
-- back: the job is not blocked (queued, running, finished otherwise) or the answer is empty.
SELECT id, status, attempts FROM runner_answer(%(id)s, %(text)s, %(by)s);

-- name: blocked_jobs
-- `runner jobs --status blocked`: each blocked job with its question and how long it waits.
SELECT id, queue, kind, attempts, max_attempts, finished_at, error, result,
       extract(epoch FROM now() - finished_at)::float8 AS waiting_seconds
FROM jobs
WHERE status = 'blocked' AND (%(queue)s::text IS NULL OR queue = %(queue)s)
ORDER BY finished_at DESC NULLS LAST
LIMIT %(limit)s;

-- name: continued_by
-- Whether a not-finished job continues from this one (config.continue_from): then the
-- session files in its directory are kept for it.
SELECT EXISTS (SELECT 1 FROM jobs
               WHERE status IN ('queued', 'claimed', 'running')
                 AND lower(config->>'continue_from') = %(id)s::text) AS awaited;
