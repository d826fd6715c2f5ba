"""Questions and answers, and jobs that continue an earlier job.

* ``jobs.answer`` (jsonb): the last answer a person gave to the job's question —
  ``{"text", "question", "options", "by", "at", "attempt"}``; ``attempt`` is the number of
  the attempt that gets it (the next one).
* ``runner_answer(job, text, by)``: the one way to answer (``runner answer`` and the web
  app call it). Only a ``blocked`` job is answered: it goes back to ``queued`` with its
  attempt given back (a question is not a failure), and an ``answered`` event is written.
  Any other job is left alone and no row comes back.
* A job whose config has ``continue_from`` depends on that job: a trigger adds it to
  ``depends_on`` on INSERT, so a plain INSERT waits for it like ``runner.client`` does,
  and gives it that job's ``repo_url`` when it names none.
* The webhook body of ``job.blocked`` carries the question's ``options`` too.

Revision ID: 0005_answer
Revises: 0004_enqueue (the lead re-chains it at merge time)
"""

from alembic import op

revision = "0005_answer"
down_revision = "0004_enqueue"
branch_labels = None
depends_on = None

MAX_ANSWER_CHARS = 20000


def _outbox(with_options: bool) -> str:
    """The webhook body's function (0003_live's), with or without the question's options."""
    options = "\n            'options', NEW.result->'options'," if with_options else ""
    return f"""
CREATE OR REPLACE FUNCTION runner_jobs_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (job_id, event, body)
    VALUES (NEW.id, 'job.' || NEW.status, jsonb_build_object(
        'job', jsonb_build_object(
            'id', NEW.id, 'queue', NEW.queue, 'kind', NEW.kind, 'status', NEW.status,
            'attempts', NEW.attempts, 'finished_at', NEW.finished_at, 'error', NEW.error,
            'summary', NEW.result->'summary', 'question', NEW.result->'question',{options}
            'cost_usd', NEW.result->'cost_usd', 'branch', NEW.branch)));
    RETURN NEW;
END;
$$;
"""


UPGRADE = f"""
ALTER TABLE jobs ADD COLUMN answer jsonb;

CREATE FUNCTION runner_answer(p_job uuid, p_text text, p_by text DEFAULT 'web app')
RETURNS TABLE (id uuid, status text, attempts integer) LANGUAGE sql AS $$
    WITH updated AS (
        UPDATE jobs j
        SET status = 'queued', attempts = greatest(j.attempts - 1, 0),
            answer = jsonb_build_object(
                'text', left(p_text, {MAX_ANSWER_CHARS}), 'question', j.result->'question',
                'options', coalesce(j.result->'options', '[]'::jsonb),
                'by', left(coalesce(p_by, 'web app'), 200), 'at', now(),
                'attempt', greatest(j.attempts - 1, 0) + 1),
            run_after = now(), error = NULL, finished_at = NULL, cancel_requested = false,
            updated_at = now()
        WHERE j.id = p_job AND j.status = 'blocked'
          AND p_text IS NOT NULL AND btrim(p_text) <> ''
        RETURNING j.id, j.status, j.attempts
    ), event AS (
        INSERT INTO job_events (job_id, worker_id, event, detail)
        SELECT u.id, NULL, 'answered',
               jsonb_build_object('by', left(coalesce(p_by, 'web app'), 200),
                                  'chars', length(p_text), 'attempts', u.attempts)
        FROM updated u
    )
    SELECT id, status, attempts FROM updated;
$$;

CREATE FUNCTION runner_jobs_continue_from() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    earlier uuid;
BEGIN
    IF jsonb_typeof(NEW.config->'continue_from') = 'string' AND NEW.config->>'continue_from'
            ~* '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$' THEN
        earlier := (NEW.config->>'continue_from')::uuid;
        IF NEW.depends_on IS NULL OR NOT (earlier = ANY(NEW.depends_on)) THEN
            NEW.depends_on := coalesce(NEW.depends_on, '{{}}'::uuid[]) || earlier;
        END IF;
        IF NEW.repo_url IS NULL THEN  -- the step after a step works in its repository
            SELECT j.repo_url INTO NEW.repo_url FROM jobs j WHERE j.id = earlier;
        END IF;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER runner_jobs_continue_from BEFORE INSERT ON jobs
    FOR EACH ROW WHEN (NEW.config ? 'continue_from')
    EXECUTE FUNCTION runner_jobs_continue_from();

""" + _outbox(with_options=True)

DOWNGRADE = _outbox(with_options=False) + """
DROP TRIGGER IF EXISTS runner_jobs_continue_from ON jobs;
DROP FUNCTION IF EXISTS runner_jobs_continue_from();
DROP FUNCTION IF EXISTS runner_answer(uuid, text, text);
ALTER TABLE jobs DROP COLUMN IF EXISTS answer;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
