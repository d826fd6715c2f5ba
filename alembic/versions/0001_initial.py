"""jobs, workers and job_events; the claim index; the NOTIFY trigger.

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Plain SQL so the contract with the web app can be reviewed as SQL. A test compares
# the result with runner/schema.py (the SQLAlchemy Core definition) so they cannot drift.
UPGRADE = r"""
CREATE TABLE jobs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    queue            text NOT NULL DEFAULT 'default',
    kind             text NOT NULL DEFAULT 'task',
    status           text NOT NULL DEFAULT 'queued',
    priority         integer NOT NULL DEFAULT 0,
    run_after        timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 3,
    repo_url         text,
    base_ref         text,
    branch           text,
    prompt           text NOT NULL DEFAULT '',
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    config           jsonb NOT NULL DEFAULT '{}'::jsonb,
    claim_token      uuid,
    claimed_by       text,
    claimed_pid      integer,
    claimed_at       timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    lease_until      timestamptz,
    worktree_path    text,
    result           jsonb,
    error            text,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_status_known CHECK (status IN
        ('queued', 'claimed', 'running', 'succeeded', 'failed', 'blocked', 'cancelled')),
    CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts >= 1),
    CONSTRAINT jobs_attempts_not_negative CHECK (attempts >= 0)
);

-- The claim walks this index in its ORDER BY; only queued rows are in it.
CREATE INDEX jobs_queued_claim_order ON jobs (priority DESC, created_at, id)
    WHERE status = 'queued';
CREATE INDEX jobs_active_lease ON jobs (lease_until)
    WHERE status IN ('claimed', 'running');
CREATE INDEX jobs_status_queue ON jobs (status, queue);

CREATE TABLE workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    version      text NOT NULL,
    state        text NOT NULL,
    current_job  uuid,
    queues       jsonb NOT NULL DEFAULT '[]'::jsonb,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE job_events (
    id        bigserial PRIMARY KEY,
    job_id    uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    worker_id text,
    event     text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX job_events_job_at ON job_events (job_id, at);

-- A plain INSERT by the web app is announced and recorded; so is every status change.
CREATE FUNCTION runner_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_events (job_id, event, detail)
        VALUES (NEW.id, 'enqueued', jsonb_build_object('queue', NEW.queue, 'priority', NEW.priority));
    END IF;
    PERFORM pg_notify('runner_jobs',
        json_build_object('id', NEW.id, 'queue', NEW.queue, 'status', NEW.status)::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER runner_jobs_inserted AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION runner_jobs_notify();
CREATE TRIGGER runner_jobs_status_changed AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION runner_jobs_notify();
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS runner_jobs_status_changed ON jobs;
DROP TRIGGER IF EXISTS runner_jobs_inserted ON jobs;
DROP FUNCTION IF EXISTS runner_jobs_notify();
DROP TABLE IF EXISTS job_events;
DROP TABLE IF EXISTS workers;
DROP TABLE IF EXISTS jobs;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
