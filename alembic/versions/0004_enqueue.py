"""The web app's enqueue guarantees: dedupe keys, concurrency keys, dependencies.

* ``dedupe_key``: at most one not-finished (queued, claimed, running) job per key — a
  partial unique index, so ``INSERT … ON CONFLICT DO NOTHING`` is the whole protocol.
* ``concurrency_key`` / ``concurrency_limit``: at most ``limit`` jobs of one key claimed or
  running at once, in enqueue order. The key defaults to ``repo_url#branch`` when a branch
  is given (a trigger fills it in for plain INSERTs too). ``concurrency_keys`` holds, per
  key, how many of its jobs are active; a trigger keeps that count exact on every status
  change by any statement, and the claim locks the key's row and re-checks it.
* ``depends_on``: job ids that must all have succeeded before the job is claimed.
* ``queue_pauses``: a queue with a row here (until ``until``, or until resumed) is not
  claimed from by any worker (``runner pause`` / ``runner resume``).

Revision ID: 0004_enqueue
Revises: 0002 (the lead re-chains it after 0003 at merge time)
"""

from alembic import op

revision = "0004_enqueue"
down_revision = "0003_live"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE jobs
    ADD COLUMN dedupe_key text,
    ADD COLUMN concurrency_key text,
    ADD COLUMN concurrency_limit integer CONSTRAINT jobs_concurrency_limit_positive
        CHECK (concurrency_limit >= 1),
    ADD COLUMN depends_on uuid[],
    -- Enqueue order, also inside one transaction (where every created_at is the same).
    ADD COLUMN enqueue_seq bigint GENERATED ALWAYS AS IDENTITY;

CREATE UNIQUE INDEX jobs_dedupe_key_open ON jobs (dedupe_key)
    WHERE status IN ('queued', 'claimed', 'running');
-- The claim asks "is an earlier job of this key still queued?" for each keyed candidate.
CREATE INDEX jobs_queued_by_key ON jobs (concurrency_key, enqueue_seq)
    WHERE status = 'queued' AND concurrency_key IS NOT NULL;
-- The dependency sweep reads only the queued jobs that wait on others.
CREATE INDEX jobs_queued_with_deps ON jobs (id)
    WHERE status = 'queued' AND depends_on IS NOT NULL;

CREATE TABLE queue_pauses (
    queue     text PRIMARY KEY,
    until     timestamptz,
    reason    text NOT NULL DEFAULT '',
    paused_by text,
    paused_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE concurrency_keys (
    key    text PRIMARY KEY,
    active integer NOT NULL DEFAULT 0 CONSTRAINT concurrency_keys_active_not_negative
        CHECK (active >= 0)
);

-- Before a row is written: the default key, and the key's row to count in.
CREATE FUNCTION runner_jobs_concurrency_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.concurrency_key IS NULL AND NEW.branch IS NOT NULL
            AND NEW.repo_url IS NOT NULL THEN
        NEW.concurrency_key := NEW.repo_url || '#' || NEW.branch;
    END IF;
    IF NEW.concurrency_key IS NOT NULL THEN
        INSERT INTO concurrency_keys (key) VALUES (NEW.concurrency_key) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END;
$$;

-- After any status change, by any statement: the key's count of active jobs follows.
CREATE FUNCTION runner_jobs_concurrency_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was boolean := TG_OP <> 'INSERT' AND OLD.concurrency_key IS NOT NULL
                   AND OLD.status IN ('claimed', 'running');
    now_active boolean := TG_OP <> 'DELETE' AND NEW.concurrency_key IS NOT NULL
                          AND NEW.status IN ('claimed', 'running');
BEGIN
    IF was AND NOT (now_active AND NEW.concurrency_key = OLD.concurrency_key) THEN
        UPDATE concurrency_keys SET active = active - 1 WHERE key = OLD.concurrency_key;
    END IF;
    IF now_active AND NOT (was AND NEW.concurrency_key = OLD.concurrency_key) THEN
        UPDATE concurrency_keys SET active = active + 1 WHERE key = NEW.concurrency_key;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER runner_jobs_concurrency_key BEFORE INSERT OR UPDATE OF concurrency_key ON jobs
    FOR EACH ROW EXECUTE FUNCTION runner_jobs_concurrency_key();
CREATE TRIGGER runner_jobs_concurrency_inserted AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.concurrency_key IS NOT NULL)
    EXECUTE FUNCTION runner_jobs_concurrency_count();
CREATE TRIGGER runner_jobs_concurrency_changed AFTER UPDATE OF status, concurrency_key ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.concurrency_key IS DISTINCT FROM NEW.concurrency_key)
    EXECUTE FUNCTION runner_jobs_concurrency_count();
CREATE TRIGGER runner_jobs_concurrency_deleted AFTER DELETE ON jobs
    FOR EACH ROW WHEN (OLD.concurrency_key IS NOT NULL)
    EXECUTE FUNCTION runner_jobs_concurrency_count();
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS runner_jobs_concurrency_deleted ON jobs;
DROP TRIGGER IF EXISTS runner_jobs_concurrency_changed ON jobs;
DROP TRIGGER IF EXISTS runner_jobs_concurrency_inserted ON jobs;
DROP TRIGGER IF EXISTS runner_jobs_concurrency_key ON jobs;
DROP FUNCTION IF EXISTS runner_jobs_concurrency_count();
DROP FUNCTION IF EXISTS runner_jobs_concurrency_key();
DROP TABLE IF EXISTS concurrency_keys;
DROP TABLE IF EXISTS queue_pauses;
DROP INDEX IF EXISTS jobs_queued_with_deps;
DROP INDEX IF EXISTS jobs_queued_by_key;
DROP INDEX IF EXISTS jobs_dedupe_key_open;
ALTER TABLE jobs DROP COLUMN IF EXISTS depends_on, DROP COLUMN IF EXISTS concurrency_limit,
    DROP COLUMN IF EXISTS concurrency_key, DROP COLUMN IF EXISTS dedupe_key,
    DROP COLUMN IF EXISTS enqueue_seq;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
