"""Key heads: the claim walks only jobs that can be their key's next, so one busy key with
a long backlog costs the claim one row, not one row per queued job of that key.

``jobs.key_head`` is true on the oldest queued job (lowest ``enqueue_seq``) of each
concurrency key; other queued jobs of the key may carry it too (a requeued job does), which
costs the claim a row but is never wrong: the claim still checks "no earlier queued job of
the key" and locks the key's slot. The one thing that must never happen is a key with queued
jobs and no flagged one (its jobs would never be claimed). Invariant: every key with queued
jobs has its minimum-seq queued job flagged. The index ``jobs_queued_heads`` holds the
queued jobs without a key and the flagged ones, in claim order.

Kept by triggers on jobs, by any statement (a web app's plain INSERT/UPDATE/DELETE too):

* before a keyed job is written queued: on INSERT it is flagged unless an earlier queued,
  flagged job of its key exists — that job is locked ``FOR SHARE`` until the enqueue ends,
  so it cannot leave ``queued`` (and hand the flag over) while our row is invisible to the
  hand-over; the claim's ``SKIP LOCKED`` passes it by meanwhile. A job that becomes queued
  again (requeue, retry, answer) or changes key is simply flagged. A job leaving ``queued``
  loses its flag.
* after a flagged queued job leaves ``queued``, changes key or is deleted: the flag goes to
  the key's next queued job in enqueue order (``runner_jobs_key_head_hand_over``). It
  passes by flagged jobs another transaction holds (and flags the next) and waits only for
  unflagged ones; two statements that each take several jobs of one key out of the queue
  at once (flagged and not) could still deadlock: PostgreSQL aborts one, nothing is lost.

Revision ID: 0007_key_heads
Revises: 0006_guard
"""

from alembic import op

revision = "0007_key_heads"
down_revision = "0006_guard"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE jobs ADD COLUMN key_head boolean NOT NULL DEFAULT false;

-- The oldest queued job of each key is its head.
UPDATE jobs SET key_head = true
WHERE id IN (SELECT DISTINCT ON (concurrency_key) id FROM jobs
             WHERE status = 'queued' AND concurrency_key IS NOT NULL
             ORDER BY concurrency_key, enqueue_seq);

-- The claim walks this one: a busy key's backlog is not in it, only its head.
CREATE INDEX jobs_queued_heads ON jobs (priority DESC, created_at, id)
    WHERE status = 'queued' AND (concurrency_key IS NULL OR key_head);

-- Before the row is written. Named to sort after runner_jobs_concurrency_key (BEFORE
-- triggers run in name order), which fills in the default key first.
CREATE FUNCTION runner_jobs_key_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'queued' OR NEW.concurrency_key IS NULL THEN
        NEW.key_head := false;
    ELSIF TG_OP = 'UPDATE' THEN
        -- Queued again (requeue, retry, answer) or queued under another key: flagged.
        -- Possibly one flag too many, never one too few.
        IF OLD.status <> 'queued' OR OLD.concurrency_key IS DISTINCT FROM NEW.concurrency_key THEN
            NEW.key_head := true;
        END IF;
    ELSE
        -- An earlier head stays queued (and flagged) until our transaction ends: the share
        -- lock makes whoever takes it out of the queue wait, or skip it (the claim), so the
        -- hand-over after it runs when our row is committed and visible to it.
        PERFORM 1 FROM jobs e
        WHERE e.concurrency_key = NEW.concurrency_key AND e.status = 'queued' AND e.key_head
          AND e.enqueue_seq < NEW.enqueue_seq
        LIMIT 1
        FOR SHARE OF e;
        NEW.key_head := NOT FOUND;
    END IF;
    RETURN NEW;
END;
$$;

-- The key's next queued job in enqueue order gets the flag, unless a flagged one comes
-- first. Each statement here reads a new snapshot (READ COMMITTED), so rows committed
-- while we waited are seen.
CREATE FUNCTION runner_jobs_key_head_hand_over(p_key text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id, key_head FROM jobs
             WHERE concurrency_key = p_key AND status = 'queued'
             ORDER BY enqueue_seq LOOP
        IF r.key_head THEN
            -- A flagged job that nobody is changing now keeps the key claimable: locked until
            -- we commit, it cannot leave before our own change is visible. One being changed
            -- (locked) may be leaving — by a transaction whose hand-over may not see ours —
            -- so it is passed by and the next one is flagged too. Waiting for it instead
            -- could deadlock with that transaction's hand-over waiting for our row.
            PERFORM 1 FROM jobs
            WHERE id = r.id AND status = 'queued' AND key_head AND concurrency_key = p_key
            FOR SHARE SKIP LOCKED;
            IF FOUND THEN
                RETURN;
            END IF;
        ELSE
            -- Waits for a transaction changing the row, then re-checks its newest version:
            -- gone from the queue, the loop goes on to the next.
            UPDATE jobs SET key_head = true
            WHERE id = r.id AND status = 'queued' AND concurrency_key = p_key;
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;
    END LOOP;
END;
$$;

CREATE FUNCTION runner_jobs_key_head_left() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM runner_jobs_key_head_hand_over(OLD.concurrency_key);
    RETURN NULL;
END;
$$;

CREATE TRIGGER runner_jobs_key_head BEFORE INSERT OR UPDATE OF status, concurrency_key ON jobs
    FOR EACH ROW EXECUTE FUNCTION runner_jobs_key_head();
CREATE TRIGGER runner_jobs_key_head_left AFTER UPDATE OF status, concurrency_key ON jobs
    FOR EACH ROW WHEN (OLD.key_head AND OLD.status = 'queued'
                       AND (NEW.status <> 'queued'
                            OR NEW.concurrency_key IS DISTINCT FROM OLD.concurrency_key))
    EXECUTE FUNCTION runner_jobs_key_head_left();
CREATE TRIGGER runner_jobs_key_head_deleted AFTER DELETE ON jobs
    FOR EACH ROW WHEN (OLD.key_head AND OLD.status = 'queued')
    EXECUTE FUNCTION runner_jobs_key_head_left();
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS runner_jobs_key_head_deleted ON jobs;
DROP TRIGGER IF EXISTS runner_jobs_key_head_left ON jobs;
DROP TRIGGER IF EXISTS runner_jobs_key_head ON jobs;
DROP FUNCTION IF EXISTS runner_jobs_key_head_left();
DROP FUNCTION IF EXISTS runner_jobs_key_head_hand_over(text);
DROP FUNCTION IF EXISTS runner_jobs_key_head();
DROP INDEX IF EXISTS jobs_queued_heads;
ALTER TABLE jobs DROP COLUMN IF EXISTS key_head;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
