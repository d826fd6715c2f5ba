"""An index for pruning finished jobs, so the hot table stays small.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-20
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX jobs_finished_at ON jobs (finished_at) "
        "WHERE status IN ('succeeded', 'failed', 'blocked', 'cancelled')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS jobs_finished_at")
