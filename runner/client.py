"""Enqueue from a web app's own connection, inside its own transaction.

    from runner.client import enqueue
    with psycopg.connect(url) as conn:          # or: with engine.begin() as conn (SQLAlchemy)
        order = insert_order(conn, …)
        job = enqueue(conn, prompt="Fix issue #12", repo_url="https://github.com/acme/app.git",
                      config={"model": "sonnet", "max_turns": 40})
        # the job becomes visible (and is announced) when the caller's transaction commits

The config is checked before the INSERT, against the same definition the runner uses
(runner/jobconfig.py): a bad one raises ``InvalidJob`` saying which key is wrong and what
it must be, and nothing is written. What depends on one worker's operator (its allowed
agents, permission modes and repository hosts) is decided when a worker claims the job.
Any language can do the same with a plain INSERT (docs/enqueue.md).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runner import jobconfig
from runner.errors import InvalidJob, JobInputError
from runner.queue import Queue

MAX_PROMPT_CHARS = 100_000  # what the runner accepts (runner/prompts/__init__.py)


@dataclass(frozen=True)
class Enqueued:
    id: uuid.UUID
    created: bool  # False: a not-finished job with the same dedupe_key already existed


def enqueue(conn: Any, *, prompt: str = "", repo_url: str | None = None,
            config: dict[str, Any] | None = None, queue: str = "default", kind: str = "task",
            priority: int = 0, max_attempts: int = 3, base_ref: str | None = None,
            branch: str | None = None, payload: dict[str, Any] | None = None,
            run_after: datetime | None = None, default_agent: str = "claude") -> Enqueued:
    """Check the job, then INSERT it on ``conn`` (a psycopg 3 connection or a SQLAlchemy
    Connection over psycopg), in whatever transaction the caller has open."""
    check(prompt=prompt, config=config or {}, priority=priority, max_attempts=max_attempts,
          payload=payload, default_agent=default_agent)
    row = Queue(_psycopg(conn), "client").enqueue(
        prompt=prompt, queue=queue, kind=kind, priority=priority, max_attempts=max_attempts,
        repo_url=repo_url, base_ref=base_ref, branch=branch, payload=payload, config=config,
        run_after=run_after)
    return Enqueued(row["id"], True)


def check(*, prompt: str, config: dict[str, Any], priority: int = 0, max_attempts: int = 3,
          payload: Any = None, default_agent: str = "claude") -> jobconfig.JobConfig:
    """Everything about a job that can be known without a worker: ``InvalidJob`` if not."""
    try:
        parsed = jobconfig.parse(config, default_agent)
    except JobInputError as exc:
        raise InvalidJob(str(exc)) from None
    if not isinstance(prompt, str):
        raise InvalidJob(f"prompt must be text, got {type(prompt).__name__}")
    if "\x00" in prompt:
        raise InvalidJob("the prompt contains a NUL character")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidJob(f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are allowed")
    if isinstance(priority, bool) or not isinstance(priority, int) or not -2**31 <= priority < 2**31:
        raise InvalidJob(f"priority must be a whole number from {-2**31} to {2**31 - 1}, got {priority!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 1000:
        raise InvalidJob(f"max_attempts must be a whole number from 1 to 1000, got {max_attempts!r}")
    if payload is not None and not isinstance(payload, dict):
        raise InvalidJob(f"payload must be a JSON object, got {type(payload).__name__}")
    return parsed


def _psycopg(conn: Any) -> Any:
    """The psycopg 3 connection under ``conn`` (itself, or a SQLAlchemy Connection's)."""
    import psycopg
    if isinstance(conn, psycopg.Connection):
        return conn
    raw = getattr(getattr(conn, "connection", None), "driver_connection", None)
    if isinstance(raw, psycopg.Connection):
        return raw
    raise TypeError("runner.client.enqueue needs a psycopg 3 connection, or a SQLAlchemy "
                    "Connection using the psycopg driver (postgresql+psycopg://)")
