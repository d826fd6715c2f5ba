"""The queue protects itself: automatic pauses per queue and agent (runner/guard.py).

``agent_pauses`` holds, per (queue, agent), the model API's recent overload answers
(HTTP 429/529/5xx) that ended runs — ``strikes`` within a window that began at
``window_started_at`` — and, once they reach the threshold, a pause that every worker's
claim honours until ``until``. ``pauses`` counts the pauses in a row since the last
success (the backoff's exponent); a success of the agent on that queue deletes the row.

Revision ID: 0006_guard
Revises: 0005_answer
"""

from alembic import op

revision = "0006_guard"
down_revision = "0005_answer"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE agent_pauses (
    queue             text NOT NULL,
    agent             text NOT NULL,
    strikes           integer NOT NULL DEFAULT 0,
    struck_jobs       uuid[] NOT NULL DEFAULT '{}',  -- the jobs behind the strikes: one job is one strike
    window_started_at timestamptz NOT NULL DEFAULT now(),
    pauses            integer NOT NULL DEFAULT 0,
    until             timestamptz,
    last_error        text NOT NULL DEFAULT '',
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, agent)
);
"""

DOWNGRADE = "DROP TABLE IF EXISTS agent_pauses;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
