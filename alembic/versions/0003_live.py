"""Live control and progress: cancel and claim changes are announced, jobs.progress.

- ``runner_jobs`` notifications carry ``event``: ``enqueued``, ``status`` (a status
  change), ``cancel_requested``, ``claim`` (the claim token changed without a status
  change) — and ``progress``, sent by the runner's progress statement. The worker running
  a job LISTENs, so a cancel (``runner cancel`` or the web app's own
  ``UPDATE jobs SET cancel_requested = true``) or a lost claim stops its agent within a
  second instead of at the next lease renewal.
- ``jobs.progress`` (jsonb): the latest progress snapshot of a running job, for a page
  that polls (the history is in ``job_events`` rows with ``event = 'progress'``).
- ``webhook_outbox``: one row per final status (succeeded, failed, blocked — a question —,
  cancelled), written by a trigger in the same transaction as the status change, so no
  delivery is lost; workers POST them to RUNNER_WEBHOOK_URL, retrying with backoff.

Revision ID: 0003_live
Revises: 0002
Create Date: 2026-12-02
"""

from alembic import op

revision = "0003_live"
# The head before this one is revision "0002" (its file is 0002_finished_index.py).
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE jobs ADD COLUMN progress jsonb;

-- A function of its own (0001's runner_jobs_notify stays as it was, for the downgrade).
CREATE FUNCTION runner_jobs_announce() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_events (job_id, event, detail)
        VALUES (NEW.id, 'enqueued', jsonb_build_object('queue', NEW.queue, 'priority', NEW.priority));
        kind := 'enqueued';
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        kind := 'status';
    ELSIF NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        kind := 'cancel_requested';
    ELSE
        kind := 'claim';
    END IF;
    PERFORM pg_notify('runner_jobs',
        json_build_object('id', NEW.id, 'queue', NEW.queue, 'status', NEW.status,
                          'event', kind)::text);
    RETURN NEW;
END;
$$;

DROP TRIGGER runner_jobs_inserted ON jobs;
DROP TRIGGER runner_jobs_status_changed ON jobs;
CREATE TRIGGER runner_jobs_inserted AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION runner_jobs_announce();
CREATE TRIGGER runner_jobs_status_changed AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION runner_jobs_announce();
-- A status change is announced by runner_jobs_status_changed already; this one covers
-- what changes without one: a cancel request, and a claim taken over.
CREATE TRIGGER runner_jobs_control_changed AFTER UPDATE OF cancel_requested, claim_token ON jobs
    FOR EACH ROW WHEN (OLD.status IS NOT DISTINCT FROM NEW.status AND (
        (NEW.cancel_requested AND NOT OLD.cancel_requested)
        OR OLD.claim_token IS DISTINCT FROM NEW.claim_token))
    EXECUTE FUNCTION runner_jobs_announce();

CREATE TABLE webhook_outbox (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    event           text NOT NULL,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_status     integer,
    last_error      text
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX webhook_outbox_job ON webhook_outbox (job_id);

-- What the web app is told, fixed when the status changes (a retry later sends the same).
CREATE FUNCTION runner_jobs_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (job_id, event, body)
    VALUES (NEW.id, 'job.' || NEW.status, jsonb_build_object(
        'job', jsonb_build_object(
            'id', NEW.id, 'queue', NEW.queue, 'kind', NEW.kind, 'status', NEW.status,
            'attempts', NEW.attempts, 'finished_at', NEW.finished_at, 'error', NEW.error,
            'summary', NEW.result->'summary', 'question', NEW.result->'question',
            'cost_usd', NEW.result->'cost_usd', 'branch', NEW.branch)));
    RETURN NEW;
END;
$$;
CREATE TRIGGER runner_jobs_finished_outbox AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       AND NEW.status IN ('succeeded', 'failed', 'blocked', 'cancelled'))
    EXECUTE FUNCTION runner_jobs_outbox();
"""

# Back to 0001's triggers, which call its runner_jobs_notify().
DOWNGRADE = r"""
DROP TRIGGER IF EXISTS runner_jobs_finished_outbox ON jobs;
DROP FUNCTION IF EXISTS runner_jobs_outbox();
DROP TABLE IF EXISTS webhook_outbox;
DROP TRIGGER IF EXISTS runner_jobs_control_changed ON jobs;
DROP TRIGGER IF EXISTS runner_jobs_status_changed ON jobs;
DROP TRIGGER IF EXISTS runner_jobs_inserted ON jobs;
CREATE TRIGGER runner_jobs_inserted AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION runner_jobs_notify();
CREATE TRIGGER runner_jobs_status_changed AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION runner_jobs_notify();
DROP FUNCTION IF EXISTS runner_jobs_announce();
ALTER TABLE jobs DROP COLUMN IF EXISTS progress;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
