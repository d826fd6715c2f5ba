"""The tables that are the contract with the web app — one definition, SQLAlchemy Core.

Alembic migrations create them; the queue's SQL (``runner/sql/queries.sql``) reads and
writes them. A web app in any language enqueues with a plain INSERT into ``jobs``; the
trigger installed by the first migration announces it on the ``runner_jobs`` channel.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Column, DateTime, ForeignKey, Identity, Index, Integer,
    MetaData, Table, Text, text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from runner.contract import ACTIVE, FINISHED, JOB_STATUSES
from runner.queue import NOTIFY_CHANNEL  # noqa: F401 - part of the contract

ACTIVE_STATUSES = tuple(s.value for s in ACTIVE)
FINAL_STATUSES = tuple(s.value for s in FINISHED)

metadata = MetaData()

_now = text("now()")

jobs = Table(
    "jobs", metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("queue", Text, nullable=False, server_default="default"),
    Column("kind", Text, nullable=False, server_default="task"),
    Column("status", Text, nullable=False, server_default="queued"),
    # Higher runs first; equal priorities run oldest first.
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("run_after", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="3"),
    Column("repo_url", Text),
    Column("base_ref", Text),
    Column("branch", Text),
    Column("prompt", Text, nullable=False, server_default=""),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("config", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Ownership: every write after the claim is conditional on this token.
    Column("claim_token", UUID(as_uuid=True)),
    Column("claimed_by", Text),
    Column("claimed_pid", Integer),
    Column("claimed_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("lease_until", DateTime(timezone=True)),
    Column("worktree_path", Text),
    Column("result", JSONB),
    Column("error", Text),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    # The latest progress snapshot of a running job (turns, tool, tokens, cost, last text);
    # the history is in job_events (event 'progress'). Migration 0003_live.
    Column("progress", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now),
    # At most one queued/claimed/running job per dedupe_key (docs/enqueue.md).
    Column("dedupe_key", Text),
    # At most concurrency_limit (default 1, or RUNNER_CONCURRENCY_LIMITS) jobs of one key
    # active at once, in enqueue order; default repo_url#branch when a branch is given.
    Column("concurrency_key", Text),
    Column("concurrency_limit", Integer),
    # Job ids that must all have succeeded before this one is claimed.
    Column("depends_on", ARRAY(UUID(as_uuid=True))),
    # The last answer to the job's question (runner_answer(), migration 0005_answer).
    Column("answer", JSONB),
    # Enqueue order, also inside one transaction (where every created_at is the same):
    # the order of the jobs of one concurrency key.
    Column("enqueue_seq", BigInteger, Identity(always=True), nullable=False),
    # True on the oldest queued job of each concurrency key (maybe on a few more): the
    # claim walks only these and the keyless ones (jobs_queued_heads). Kept by triggers
    # (migration 0007_key_heads).
    Column("key_head", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint("concurrency_limit >= 1", name="jobs_concurrency_limit_positive"),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in JOB_STATUSES) + ")", name="jobs_status_known"
    ),
    CheckConstraint("max_attempts >= 1", name="jobs_max_attempts_positive"),
    CheckConstraint("attempts >= 0", name="jobs_attempts_not_negative"),
    # Matches the claim's ORDER BY (priority DESC, created_at, id) over queued rows only,
    # so the claim stays an index walk however many rows the table holds.
    Index(
        "jobs_queued_claim_order", text("priority DESC"), "created_at", "id",
        postgresql_where=text("status = 'queued'"),
    ),
    # The claim's walk: a busy key's backlog is not in it, only the key's head.
    Index(
        "jobs_queued_heads", text("priority DESC"), "created_at", "id",
        postgresql_where=text("status = 'queued' AND (concurrency_key IS NULL OR key_head)"),
    ),
    # Requeueing expired leases looks only at the few active rows.
    Index("jobs_active_lease", "lease_until", postgresql_where=text("status IN ('claimed', 'running')")),
    Index("jobs_status_queue", "status", "queue"),
    # Pruning finished jobs walks only these.
    Index("jobs_finished_at", "finished_at",
          postgresql_where=text("status IN ('succeeded', 'failed', 'blocked', 'cancelled')")),
    Index("jobs_dedupe_key_open", "dedupe_key", unique=True,
          postgresql_where=text("status IN ('queued', 'claimed', 'running')")),
    Index("jobs_queued_by_key", "concurrency_key", "enqueue_seq",
          postgresql_where=text("status = 'queued' AND concurrency_key IS NOT NULL")),
    Index("jobs_queued_with_deps", "id",
          postgresql_where=text("status = 'queued' AND depends_on IS NOT NULL")),
)

# A paused queue: no worker claims from it until ``until`` (NULL: until resumed).
queue_pauses = Table(
    "queue_pauses", metadata,
    Column("queue", Text, primary_key=True),
    Column("until", DateTime(timezone=True)),
    Column("reason", Text, nullable=False, server_default=""),
    Column("paused_by", Text),
    Column("paused_at", DateTime(timezone=True), nullable=False, server_default=_now),
)

# The queue protects itself (runner/guard.py, migration 0005): the model API's overload
# answers per (queue, agent) and, past the threshold, a pause every claim honours.
agent_pauses = Table(
    "agent_pauses", metadata,
    Column("queue", Text, primary_key=True),
    Column("agent", Text, primary_key=True),
    Column("strikes", Integer, nullable=False, server_default="0"),
    # The jobs behind this window's strikes: one job that fails again is one strike.
    Column("struck_jobs", ARRAY(UUID(as_uuid=True)), nullable=False, server_default=text("'{}'")),
    Column("window_started_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("pauses", Integer, nullable=False, server_default="0"),
    Column("until", DateTime(timezone=True)),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_now),
)

# Per concurrency key, how many of its jobs are claimed or running: kept exact by triggers
# on jobs (migration 0004), locked and re-checked by the claim.
concurrency_keys = Table(
    "concurrency_keys", metadata,
    Column("key", Text, primary_key=True),
    Column("active", Integer, nullable=False, server_default="0"),
    CheckConstraint("active >= 0", name="concurrency_keys_active_not_negative"),
)

workers = Table(
    "workers", metadata,
    Column("id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("current_job", UUID(as_uuid=True)),
    Column("queues", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=_now),
)

job_events = Table(
    "job_events", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("worker_id", Text),
    Column("event", Text, nullable=False),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Index("job_events_job_at", "job_id", "at"),
)

# Webhook deliveries (runner/webhook.py), one per final status, written by a trigger in the
# status change's own transaction (migration 0003_live).
webhook_outbox = Table(
    "webhook_outbox", metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("job_id", UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("event", Text, nullable=False),
    Column("body", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=_now),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_status", Integer),
    Column("last_error", Text),
    Index("webhook_outbox_due", "next_attempt_at", postgresql_where=text("delivered_at IS NULL")),
    Index("webhook_outbox_job", "job_id"),
)
