"""The queue: the one small interface the iteration calls, over ``sql/queries.sql``.

Each method runs one statement in its own short transaction (autocommit); no
transaction stays open while an agent runs. Writes after the claim carry the claim
token and report whether they still owned the job.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runner import __version__, secrets
from runner.dbconn import connect, one_line, queries
from runner.errors import DatabaseUnavailable, DatabaseWriteFailed, DedupeKeyTaken

# The channel the jobs trigger announces on (set in the first migration). Defined here,
# not in runner.schema, so an iteration never imports SQLAlchemy.
NOTIFY_CHANNEL = "runner_jobs"
# A claim that found a job but lost its key's slot to a concurrent claim tries again, with
# a fresh snapshot, this many times in all (each time some other worker made progress).
CLAIM_RACE_RETRIES = 5
# PostgreSQL plans a prepared statement anew for its first five runs and makes its generic
# plan at the sixth (plancache.c): the warm-up runs the claim this often, so the claim that
# a NOTIFY wakes is not planned at all (Queue._claim_statement).
CLAIM_PLAN_RUNS = 6


@dataclass(frozen=True)
class Claim:
    """A job this worker holds: the row as claimed, and the token that proves it."""

    job: dict[str, Any]

    @property
    def id(self) -> uuid.UUID:
        return self.job["id"]

    @property
    def token(self) -> uuid.UUID:
        return self.job["claim_token"]


def _safe(value: Any) -> Any:
    """Storable and redacted (runner/secrets.py): nothing an agent printed may crash a write
    (NUL, lone surrogates) or put a secret in a row."""
    return secrets.safe_json(value)


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(_safe(value))


def _rows(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    # pgresult, not cursor.description (a Column object per column at every call: a
    # fifth of the client's CPU in claim + finish)
    result = cur.pgresult
    return cur.fetchall() if result is not None and result.nfields else []


class Queue:
    """Every queue statement, bound to one connection and one worker identity."""

    def __init__(self, conn: psycopg.Connection, worker_id: str, dsn: str | None = None,
                 purpose: str = "queue") -> None:
        self.conn = conn
        self.worker_id = worker_id
        self.dsn = dsn  # known when opened here: what reconnect() needs
        self.flushed_to: str | None = None  # the WAL on disk after our last status change
        self.purpose = purpose

    @classmethod
    def open(cls, dsn: str, worker_id: str, purpose: str = "queue", **options: Any) -> "Queue":
        queue = cls(connect(dsn, purpose, worker_id, **options), worker_id, dsn, purpose)
        queue._options = options
        return queue

    def reconnect(self) -> None:
        """A new connection in place of a dropped one (the waiting worker LISTENs on it)."""
        assert self.dsn is not None, "a Queue built on a given connection cannot reconnect"
        try:
            self.conn.close()
        except psycopg.Error:
            pass
        self.conn = connect(self.dsn, self.purpose, self.worker_id, **getattr(self, "_options", {}))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, name: str, **params: Any) -> list[dict[str, Any]]:
        return self._execute(name, queries()[name], params)[0]

    def _prepared(self) -> bool:
        """Server-side prepared statements are allowed on this connection (not behind a
        transaction-mode pooler, runner/pooler.py, where psycopg's threshold is None)."""
        return self.conn.prepare_threshold is not None

    def _execute(self, name: str, statement: str | tuple[str, ...],
                 params: dict[str, Any], prepare: bool | None = None) -> list[list[dict[str, Any]]]:
        """The rows of each statement in ``statement``: one, or a tuple of them sent in one
        pipeline (_announced's; ``params`` go to the statements that name them).
        ``prepare``: psycopg's own choice (None), or prepared server-side at once (True)."""
        with self._errors(name):
            if isinstance(statement, tuple):
                return self._send(name, statement, params).rows()
            # dict rows also on a connection of the web app's own (runner/client.py)
            with psycopg.Cursor(self.conn, row_factory=dict_row) as cur:
                cur.execute(statement, params, prepare=prepare)
                sets = []
                while True:
                    sets.append(_rows(cur))
                    if not cur.nextset():
                        return sets

    @contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        """psycopg's errors as the runner's: the connection is gone, or the statement was
        refused (not a fault of the job's: the caller hands the claim back, refunded)."""
        try:
            yield
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"the database connection failed: {one_line(exc)}") from exc
        except psycopg.Error as exc:
            if self.conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                self.conn.rollback()  # a pipeline's BEGIN whose change failed: not left open
            message = secrets.safe_text(one_line(exc), 2000)
            raise DatabaseWriteFailed(f"the database refused the runner's {name}: {message}") from exc

    def _announced(self, name: str, **params: Any) -> bool:
        """A status change of ours, durable on return, in one round trip: `BEGIN; change;
        COMMIT; flush_wal` in one pipeline (_Sent: prepared statements, not parsed and
        planned again at every call as one simple-protocol message was; the explicit
        BEGIN, or the COMMIT warns "there is no transaction in progress" — a notice to the
        client and a line in the server's log at every status change). The change's
        COMMIT does not wait for the disk while it holds the notify lock (queries.sql,
        flush_wal); the flush, a transaction of its own after that COMMIT, does. A failing
        change skips the rest and is rolled back (_errors)."""
        return self._announce(name, params).changed()

    def _announce(self, name: str, params: dict[str, Any]) -> "Announcing":
        """_announced's statements sent; their answer read by ``changed()``, later."""
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            # inside a caller's transaction: its COMMIT is the caller's, not ours to send
            return Announcing(self, name, None, bool(self._run(name, **params)))
        statements = ("BEGIN", queries()[name], "COMMIT", queries()["flush_wal"])
        with self._errors(name):
            return Announcing(self, name, self._send(name, statements, params), None)

    def _send(self, name: str, statements: tuple[str, ...], params: dict[str, Any]) -> "_Sent":
        """``statements`` sent in one pipeline (``name``: what they do, for the caller's
        errors); their results are read by the returned ``_Sent.rows()``."""
        return _Sent(self.conn, statements, params)

    # -- enqueue and operator actions -------------------------------------------------

    def enqueue(
        self, *, prompt: str = "", queue: str = "default", kind: str = "task",
        priority: int = 0, max_attempts: int = 3, repo_url: str | None = None,
        base_ref: str | None = None, branch: str | None = None,
        payload: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
        run_after: datetime | None = None, dedupe_key: str | None = None,
        concurrency_key: str | None = None, concurrency_limit: int | None = None,
        depends_on: list[uuid.UUID | str] | None = None,
    ) -> dict[str, Any] | None:
        """The new row; None when a not-finished job with ``dedupe_key`` exists."""
        rows = self._run(
            "enqueue", prompt=prompt, queue=queue, kind=kind, priority=priority,
            max_attempts=max_attempts, repo_url=repo_url, base_ref=base_ref, branch=branch,
            payload=Jsonb(payload or {}), config=Jsonb(config or {}), run_after=run_after,
            dedupe_key=dedupe_key, concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            depends_on=[str(d) for d in depends_on] if depends_on else None,
        )
        return rows[0] if rows else None

    def open_job_by_dedupe_key(self, dedupe_key: str) -> uuid.UUID | None:
        rows = self._run("open_job_by_dedupe_key", dedupe_key=dedupe_key)
        return rows[0]["id"] if rows else None

    def existing_job_ids(self, ids: list[uuid.UUID | str]) -> set[str]:
        return {str(r["id"]) for r in self._run("existing_job_ids", ids=[str(i) for i in ids])}

    def request_cancel(self, job_id: uuid.UUID | str, by: str = "operator") -> str | None:
        """Flag a job for cancelling; returns its status afterwards, None if not cancellable."""
        rows = self._run("request_cancel", id=job_id, worker_id=None, by=by)
        return rows[0]["status"] if rows else None

    def retry(self, job_id: uuid.UUID | str, by: str = "operator") -> bool:
        """Send a failed, cancelled or blocked job round again; False when it is none of
        those. ``DedupeKeyTaken`` names the unfinished job that holds its dedupe_key."""
        try:
            return bool(self._run("retry", id=job_id, worker_id=None, by=by))
        except DatabaseWriteFailed as exc:
            if not isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise
            holder = self._run("dedupe_key_holder", id=job_id)
            if not holder:  # the holder finished meanwhile: the caller may try again
                raise
            h = holder[0]
            raise DedupeKeyTaken(
                f"job {job_id} cannot be retried: its dedupe_key {h['dedupe_key']!r} is held by "
                f"job {h['id']}, which is {h['status']}; retry it once that job has finished "
                f"(or cancel that one)") from None

    def answer(self, job_id: uuid.UUID | str, text: str, by: str = "operator") -> dict[str, Any] | None:
        """Requeue a blocked job with ``text`` as the answer to its question; None when the
        job is not blocked (nothing changed)."""
        rows = self._run("answer", id=job_id, text=_safe(text), by=_safe(by))
        return rows[0] if rows else None

    def blocked(self, queue: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._run("blocked_jobs", queue=queue, limit=limit)

    def continued_by(self, job_id: uuid.UUID | str) -> bool:
        """True when a not-finished job names this one in config.continue_from."""
        return bool(self._run("continued_by", id=str(job_id))[0]["awaited"])

    def get(self, job_id: uuid.UUID | str) -> dict[str, Any] | None:
        rows = self._run("get_job", id=job_id)
        return rows[0] if rows else None

    def list(self, status: str | None = None, queue: str | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
        return self._run("list_jobs", status=status, queue=queue, limit=limit)

    def events(self, job_id: uuid.UUID | str) -> list[dict[str, Any]]:
        return self._run("job_events", id=job_id)

    # -- the worker's side ------------------------------------------------------------

    def requeue_expired(self) -> list[uuid.UUID]:
        return [r["job_id"] for r in self._run("requeue_expired", worker_id=self.worker_id)]

    def pause(self, queue: str, until: datetime | None, reason: str = "",
              by: str = "operator") -> dict[str, Any]:
        return self._run("pause_queue", queue=queue, until=until, reason=_safe(reason), by=by)[0]

    def resume(self, queue: str) -> bool:
        return bool(self._run("resume_queue", queue=queue))

    def pauses(self) -> list[dict[str, Any]]:
        """The queues paused now, by an operator (agent None) or for one agent by the
        model API's overloads (runner/guard.py); a pause whose time ran out is over."""
        return self._run("active_pauses")

    # -- the guard against the model API's overloads (runner/guard.py) -----------------

    def guard_strike(self, queue: str, agent: str, job_id: uuid.UUID | str, error: str,
                     window_seconds: float) -> dict[str, Any]:
        return self._run("guard_strike", queue=queue, agent=agent, job=str(job_id),
                         error=_safe(error), window_seconds=window_seconds)[0]

    def overload_hand_backs(self, job_id: uuid.UUID | str) -> int:
        """How often this job was handed back because the model API was overloaded."""
        return int(self._run("overload_hand_backs", id=job_id)[0]["count"])

    def guard_trip(self, queue: str, agent: str, seconds: float) -> dict[str, Any] | None:
        rows = self._run("guard_trip", queue=queue, agent=agent, seconds=seconds)
        return rows[0] if rows else None

    def guard_clear(self, queue: str, agent: str) -> bool:
        return bool(self._run("guard_clear", queue=queue, agent=agent))

    def guard_states(self) -> list[dict[str, Any]]:
        return self._run("guard_states")

    def fail_dependents(self) -> list[uuid.UUID]:
        """End failed the queued jobs whose dependency failed, was cancelled or is gone."""
        return [r["job_id"] for r in self._run("fail_dependents", worker_id=self.worker_id)]

    def claim(self, queues: list[str], lease_seconds: float,
              limits: dict[str, int] | None = None, default_agent: str = "claude") -> Claim | None:
        """One job, or None when none is claimable now. ``limits``: the operator's
        concurrency limit per key (RUNNER_CONCURRENCY_LIMITS); ``default_agent``: the
        agent of a job whose config names none (for the guard's pauses, runner/guard.py).

        The claim's COMMIT does not wait for the disk (synchronous_commit off for that one
        transaction, in the statement itself: no extra round trip). It is the one write
        between a NOTIFY and the agent's start. Lost in a server crash, the job is simply
        queued again, and mark_running (durable, so it flushes the claim too) finds no
        claim and the agent is never started."""
        for _ in range(CLAIM_RACE_RETRIES):
            row = self._claim_statement(queues=list(queues), worker_id=self.worker_id,
                                        pid=os.getpid(), lease_seconds=lease_seconds,
                                        limits=Jsonb(limits or {}), default_agent=default_agent)
            candidates = row.pop("candidates")
            if row["id"] is not None:
                return Claim(row)
            if not candidates:
                return None
            # Another worker took the key's last slot after our snapshot: look again.
        return None

    def _claim_statement(self, **params: Any) -> dict[str, Any]:
        """The claim, prepared server-side from its first run on (where the connection
        allows it): a 30-line statement costs ~1 ms to plan, and a NOTIFY wakes a worker
        whose claim is then planned once more for nothing. Prepared, PostgreSQL plans it
        per call for its first five runs, then keeps one generic plan when that is no
        costlier (plan_cache_mode auto) — the warm-up makes those runs (CLAIM_PLAN_RUNS).
        Its parameters never change the plan's shape: the queue list is an init plan
        either way, and the walk is the jobs_queued_heads index's order."""
        prepare = True if self._prepared() else None
        return self._execute("claim", queries()["claim"], params, prepare=prepare)[0][0]

    def warm_up(self, default_agent: str = "claude") -> None:
        """Run the claim path once, on a job of our own that no other worker can see, and
        roll it all back: the enqueue, the claim, ``mark_running``, their triggers, events
        and notifications never happened.

        Why: an iteration's backend is new, and the first time it plans these statements and
        runs their trigger functions it loads their catalog entries and compiles the
        PL/pgSQL — about 4 ms of a claim that finds a job, against ~1 ms once warm
        (benchmarks/agent_start.py). A waiting worker pays that while the queue is empty,
        not between the NOTIFY and the agent. Best effort: a failure here only costs the
        warmth; the real claim reports a real fault."""
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return
        own_queue = f"runner:warm-up:{self.worker_id}"[:200]
        try:
            self.conn.execute("BEGIN")
            # the claim statement, run until its generic plan is made (its queue holds
            # nothing queued) …
            for _ in range(CLAIM_PLAN_RUNS if self._prepared() else 1):
                self._claim_statement(queues=[own_queue], worker_id=self.worker_id,
                                      pid=os.getpid(), lease_seconds=60, limits=Jsonb({}),
                                      default_agent=default_agent)
            # … and the triggers a claim and mark_running fire, on a job of our own that
            # was never queued (queries.sql, warm_up_job)
            [job] = self._run("warm_up_job", queue=own_queue, worker_id=self.worker_id)
            self._run("mark_running", id=job["id"], token=job["claim_token"],
                      worker_id=self.worker_id, worktree_path="", detail=Jsonb({}))
        except (DatabaseUnavailable, DatabaseWriteFailed, psycopg.Error):
            pass
        finally:
            self._rollback_keeping_prepared()

    def _rollback_keeping_prepared(self) -> None:
        """ROLLBACK, sent past psycopg: on a ROLLBACK of its own psycopg forgets every
        statement it prepared on the server (DEALLOCATE ALL), and the claim of a
        long-running waiter would be parsed and planned again after every warm-up
        (+1 to 1.5 ms a claim in benchmarks/peers.py)."""
        with self.conn.lock:
            if self.conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.pgconn.exec_(b"ROLLBACK")  # a broken connection: the next statement says so

    def mark_running(self, claim: Claim, worktree_path: str, **detail: Any) -> bool:
        return self.mark_running_sent(claim, worktree_path, **detail).changed()

    def mark_running_sent(self, claim: Claim, worktree_path: str, **detail: Any) -> "Announcing":
        """mark_running sent, not waited for: the server commits and flushes it while the
        runner writes the job's last files (runner/job.py); ``changed()`` says whether the
        claim still held, once it is durable. Nothing else may use the connection between."""
        return self._announce("mark_running", dict(
            id=claim.id, token=claim.token, worker_id=self.worker_id,
            worktree_path=_safe(worktree_path), detail=_jsonb(detail)))

    def renew(self, claim: Claim, lease_seconds: float) -> dict[str, Any] | None:
        """Extend the lease; None when the claim is lost."""
        rows = self._run("renew_lease", id=claim.id, token=claim.token,
                         lease_seconds=lease_seconds)
        return rows[0] if rows else None

    def claim_state(self, claim: Claim) -> dict[str, Any] | None:
        """The row's cancel flag under our claim token; None when the claim is lost."""
        rows = self._run("claim_state", id=claim.id, token=claim.token)
        return rows[0] if rows else None

    def progress(self, claim: Claim, snapshot: dict[str, Any]) -> bool:
        """Record a progress snapshot of our running job; False when it is not ours (any more)."""
        return bool(self._run("progress", id=claim.id, token=claim.token,
                              worker_id=self.worker_id, progress=_jsonb(snapshot)))

    def finish(self, claim: Claim, status: str, *, result: dict[str, Any] | None = None,
               error: str | None = None, **detail: Any) -> bool:
        if error is not None:
            detail.setdefault("error", error)
        return self._announced(
            "finish", id=claim.id, token=claim.token, worker_id=self.worker_id, status=status,
            result=_jsonb(result) if result is not None else None, error=_safe(error),
            detail=_jsonb(detail),
        )

    def requeue(self, claim: Claim, *, event: str, reason: str, refund_attempt: bool,
                run_after: datetime | None = None, result: dict[str, Any] | None = None,
                keep_error: bool = True, **detail: Any) -> bool:
        return self._announced(
            "requeue", id=claim.id, token=claim.token, worker_id=self.worker_id, event=event,
            refund_attempt=refund_attempt, run_after=run_after,
            result=_jsonb(result) if result is not None else None,
            error=_safe(reason) if keep_error else None,
            detail=_jsonb({"reason": reason, **detail}),
        )

    def runner_faults(self, job_id: uuid.UUID) -> int:
        """How many times the runner failed on this job and handed it back."""
        return int(self._run("runner_faults", id=job_id)[0]["faults"])

    def prune_finished(self, days: float, limit: int = 1000) -> int:
        return len(self._run("prune_finished", days=days, limit=limit))

    def held_by_me(self) -> list[dict[str, Any]]:
        return self._run("held_by_worker", worker_id=self.worker_id)

    def worker_seen(self, state: str, current_job: uuid.UUID | None = None,
                    queues: list[str] | None = None) -> None:
        self._run("worker_seen", id=_safe(self.worker_id), host=_safe(socket.gethostname()),
                  pid=os.getpid(), version=__version__, state=_safe(state),
                  current_job=current_job, queues=_jsonb(queues or []))

    def workers(self) -> list[dict[str, Any]]:
        return self._run("list_workers")

    def prune_workers(self, older_than_seconds: float) -> int:
        return len(self._run("prune_workers", older_than_seconds=older_than_seconds))

    def touch_worker(self) -> None:
        self._run("touch_worker", id=self.worker_id)

    # -- webhook outbox (runner/webhook.py) --------------------------------------------------

    def webhook_next(self, lease_seconds: float) -> dict[str, Any] | None:
        rows = self._run("webhook_next", lease_seconds=lease_seconds)
        return rows[0] if rows else None

    def webhook_delivered(self, delivery_id: uuid.UUID, status: int) -> None:
        self._run("webhook_delivered", id=delivery_id, status=status)

    def webhook_failed(self, delivery_id: uuid.UUID, status: int | None, error: str,
                       retry_seconds: float) -> None:
        self._run("webhook_failed", id=delivery_id, status=status, error=_safe(error),
                  retry_seconds=retry_seconds)

    def webhook_deliveries(self, job_id: uuid.UUID | str) -> list[dict[str, Any]]:
        return self._run("webhook_deliveries", id=job_id)

    def webhook_pending(self) -> dict[str, Any]:
        return self._run("webhook_pending")[0]

    # -- operations (runner logs, /metrics) ---------------------------------------------

    def job_status(self, job_id: uuid.UUID | str) -> str | None:
        rows = self._run("job_status", id=job_id)
        return rows[0]["status"] if rows else None

    def job_ids_by_prefix(self, prefix: str) -> list[str]:
        return [str(r["id"]) for r in self._run("job_ids_by_prefix", prefix=prefix.lower())]

    def job_counts(self) -> list[dict[str, Any]]:
        return self._run("job_counts")

    def worker_event_counts(self, worker_id: str) -> dict[str, int]:
        return {r["event"]: r["n"] for r in self._run("worker_event_counts", worker_id=worker_id)}

    def claim_latencies(self, window_seconds: float) -> list[float]:
        return [r["seconds"] for r in self._run("claim_latencies", window_seconds=window_seconds)]


class _Sent:
    """Statements sent in one pipeline, each as its own extended-protocol query, whose
    results are read by ``rows()`` (which ends the pipeline). The connection prepares them
    server-side after a few calls (prepare_threshold; off behind a transaction-mode
    pooler, runner/pooler.py), so the backend no longer parses and plans them at every
    call. After an error the server skips the rest; ``rows()`` raises it."""

    def __init__(self, conn: psycopg.Connection, statements: tuple[str, ...],
                 params: dict[str, Any]) -> None:
        # A statement without parameters (BEGIN, COMMIT, the flush) on one cursor, whose
        # last result is kept: a cursor fewer per call is CPU the client no longer spends.
        plain = psycopg.Cursor(conn, row_factory=dict_row)
        self.cursors = [psycopg.Cursor(conn, row_factory=dict_row) if "%(" in statement
                        else plain for statement in statements]
        self._pipeline = conn.pipeline()
        self._pipeline.__enter__()
        try:
            for cur, statement in zip(self.cursors, statements):
                cur.execute(statement, params if cur is not plain else None)
        except BaseException as exc:
            self._end(exc)
            raise

    def _end(self, exc: BaseException | None) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    def rows(self) -> list[list[dict[str, Any]]]:
        self._end(None)  # the Sync, and every result read (an error raised here)
        # each cursor's rows once, at its last statement (the earlier ones: no rows)
        last = {id(cur): i for i, cur in enumerate(self.cursors)}
        return [_rows(cur) if last[id(cur)] == i else [] for i, cur in enumerate(self.cursors)]


class Announcing:
    """A status change sent (Queue._announce); ``changed()`` waits for it to be durable
    and says whether it changed the row (False: the claim is lost)."""

    def __init__(self, queue: Queue, name: str, sent: _Sent | None, changed: bool | None) -> None:
        self.queue, self.name, self.sent, self._changed = queue, name, sent, changed

    def changed(self) -> bool:
        if self.sent is not None:
            sent, self.sent = self.sent, None
            with self.queue._errors(self.name):
                _begin, changed, _commit, flushed = sent.rows()
            # where the WAL is on disk up to (tests, debugging)
            self.queue.flushed_to = flushed[0]["lsn"]
            self._changed = bool(changed)
        return bool(self._changed)
