"""The contract between the parts of the runner, in one place.

The iteration (``python -m runner.one_job``), the supervisor (``bin/run-agent.sh`` with
``runner.supervise``), ``runner health`` and the web app all read these names and numbers;
each imports them from here rather than spelling them again.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Exit(IntEnum):
    """Exit codes of one iteration, and what the supervisor does after each."""

    OK = 0  # a job reached a recorded state, or none came: go on at once
    FAILED = 1  # the iteration failed: back off, UNHEALTHY after N in a row
    TOKEN_EXPIRED = 3  # the agent's credential was rejected: TOKEN_EXPIRED, claim nothing
    USAGE_LIMIT = 4  # the agent hit its usage limit: sleep until the reset
    STOPPED = 143  # SIGTERM/SIGINT: the claim was handed back


class JobStatus(StrEnum):
    """``jobs.status``: the row's life (DESIGN.md)."""

    QUEUED = "queued"
    CLAIMED = "claimed"  # claimed, the agent not started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


JOB_STATUSES = tuple(s.value for s in JobStatus)
# A worker holds a job in these states (under a lease).
ACTIVE = (JobStatus.CLAIMED, JobStatus.RUNNING)
# A job in one of these states is done: nothing claims it again by itself.
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.BLOCKED, JobStatus.CANCELLED)
# Work of a job that ended this way stays on disk for a person to look at.
KEPT_FOR_INSPECTION = (JobStatus.FAILED, JobStatus.BLOCKED, JobStatus.CANCELLED)


class SupervisorStatus(StrEnum):
    """``state.json``'s ``status``: what the supervisor is doing now."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    TOKEN_EXPIRED = "token_expired"
    USAGE_LIMITED = "usage_limited"
    STOPPING = "stopping"
    STOPPED = "stopped"


class StateFile(StrEnum):
    """Files in ``RUNNER_STATE_DIR``."""

    STATE = "state.json"  # the supervisor's state (every heartbeat)
    CURRENT_JOB = "current_job"  # the job id the iteration holds, while it holds one
    USAGE_LIMIT_RESET = "usage_limit_reset_at"  # Unix seconds, written before exit 4
    LAST_ERROR = "last_error"  # the last runner-side fault, one line
    CREDENTIAL_ENV = "credential.env"  # an operator's fresh credential (lifts TOKEN_EXPIRED)
    ITERATIONS = "iterations.jsonl"  # how long recent iterations took
    # Markers: present while the condition lasts; `runner health` is unhealthy with either.
    UNHEALTHY = "UNHEALTHY"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"


MARKERS = (StateFile.UNHEALTHY, StateFile.TOKEN_EXPIRED)

# The fields of state.json, in the order the supervisor writes them.
STATE_FIELDS = ("status", "supervisor_pid", "worker_id", "iteration", "iteration_started_at",
                "last_exit_code", "last_iteration_finished_at", "consecutive_failures",
                "current_job", "run_log", "backoff_until", "usage_limit_reset_at", "updated_at")
