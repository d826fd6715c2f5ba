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
            run_after: datetime | None = None, dedupe_key: str | None = None,
            concurrency_key: str | None = None, concurrency_limit: int | None = None,
            depends_on: list[uuid.UUID | str] | None = None,
            default_agent: str = "claude") -> Enqueued:
    """Check the job, then INSERT it on ``conn`` (a psycopg 3 connection or a SQLAlchemy
    Connection over psycopg), in whatever transaction the caller has open.

    ``dedupe_key``: when a queued, claimed or running job with this key exists, nothing is
    inserted and that job's id comes back (``created=False``) — a double-clicked button
    enqueues once. ``concurrency_key`` (default ``repo_url#branch`` when a branch is given)
    with ``concurrency_limit`` (default 1): at most that many jobs of the key run at once,
    in enqueue order. ``depends_on``: job ids that must all succeed first; if one fails or
    is cancelled, this job ends failed without running. They must exist (in this
    transaction too: a pipeline can be enqueued in one transaction). ``config.continue_from``
    (a job id) adds that job to ``depends_on``: the job starts from its head, on its branch,
    resuming its session (docs/enqueue.md).
    """
    parsed = check(prompt=prompt, config=config or {}, priority=priority,
                   max_attempts=max_attempts, payload=payload, default_agent=default_agent)
    deps = _check_keys(dedupe_key, concurrency_key, concurrency_limit, depends_on)
    q = Queue(_psycopg(conn), "client")
    if parsed.continue_from:  # it implies depends_on: the job waits for that one to succeed
        earlier = parsed.continue_from.lower()
        if base_ref is not None:
            raise InvalidJob("a job with config.continue_from starts from that job's head: "
                             "leave base_ref empty")
        if earlier not in deps:
            if not q.existing_job_ids([earlier]):
                raise InvalidJob(f"config.continue_from names job {earlier}, which does not exist")
            deps.append(earlier)
    if deps:
        missing = sorted(set(deps) - q.existing_job_ids(deps))
        if missing:
            raise InvalidJob(f"depends_on names jobs that do not exist: {', '.join(missing)}")
    # ON CONFLICT DO NOTHING, then a fresh look for the job that won: READ COMMITTED (the
    # default) lets the second statement see a row committed while the first waited. The
    # winner may finish in between; then the key is free and the INSERT is tried again.
    for _ in range(3):
        row = q.enqueue(
            prompt=prompt, queue=queue, kind=kind, priority=priority, max_attempts=max_attempts,
            repo_url=repo_url, base_ref=base_ref, branch=branch, payload=payload, config=config,
            run_after=run_after, dedupe_key=dedupe_key, concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit, depends_on=deps or None)
        if row is not None:
            return Enqueued(row["id"], True)
        assert dedupe_key is not None  # only a dedupe key can make the INSERT a no-op
        existing = q.open_job_by_dedupe_key(dedupe_key)
        if existing is not None:
            return Enqueued(existing, False)
    raise InvalidJob(f"dedupe_key {dedupe_key!r} is being enqueued and finished again and "
                     f"again by others; try again")


def _check_keys(dedupe_key: Any, concurrency_key: Any, concurrency_limit: Any,
                depends_on: Any) -> list[str]:
    for name, value in (("dedupe_key", dedupe_key), ("concurrency_key", concurrency_key)):
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 1000
                                  or "\x00" in value):
            raise InvalidJob(f"{name} must be text of 1 to 1000 characters, got {value!r:.80}")
    if concurrency_limit is not None and (isinstance(concurrency_limit, bool) or not isinstance(
            concurrency_limit, int) or not 1 <= concurrency_limit <= 10000):
        raise InvalidJob(f"concurrency_limit must be a whole number from 1 to 10000, got {concurrency_limit!r}")
    if depends_on is None:
        return []
    if isinstance(depends_on, (str, bytes)) or not isinstance(depends_on, (list, tuple)):
        raise InvalidJob("depends_on must be a list of job ids")
    ids = []
    for item in depends_on:
        try:
            ids.append(str(item if isinstance(item, uuid.UUID) else uuid.UUID(str(item))))
        except ValueError:
            raise InvalidJob(f"depends_on has {str(item)[:60]!r}, which is not a job id (a UUID)") from None
    return ids


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
