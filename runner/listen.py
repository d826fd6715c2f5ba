"""Wait for work: LISTEN on ``runner_jobs`` with a safety poll, reconnecting if dropped.

The order matters: LISTEN first, then try to claim, then wait. A job inserted between
an empty claim and the LISTEN would otherwise sit unseen until the next poll. (A first
claim before any LISTEN is only a shortcut for a busy queue.)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import structlog
from psycopg import sql
from tenacity import (
    RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential,
)

from runner.errors import DatabaseUnavailable
from runner.dbconn import connect
from runner.queue import NOTIFY_CHANNEL, Queue

log = structlog.get_logger("runner.listen")
T = TypeVar("T")

# Waits are sliced so a SIGTERM (which only sets a flag) is acted on promptly.
_SLICE_SECONDS = 0.5


class Listener:
    """A dedicated connection that LISTENs on the jobs channel (RUNNER_LISTEN_DATABASE_URL:
    the claiming connection goes through a pooler)."""

    shares_claim_connection = False

    def __init__(self, dsn: str, worker_id: str, queues: list[str]) -> None:
        self.dsn = dsn
        self.worker_id = worker_id
        self.queues = set(queues)
        self.conn: psycopg.Connection | None = None

    def open(self) -> None:
        self.conn = connect(self.dsn, "listen", self.worker_id)
        self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a NOTIFY about a queued job in one of our queues."""
        assert self.conn is not None
        try:
            for note in self.conn.notifies(timeout=max(seconds, 0.0)):
                if self._relevant(note.payload):
                    return True
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(f"the LISTEN connection dropped: {exc}") from exc
        return False

    def _relevant(self, payload: str) -> bool:
        try:
            data = json.loads(payload)
        except ValueError:
            return True  # an unreadable notice is a reason to look, not to ignore
        # A cancel request, a claim change or a progress report is no new work.
        if data.get("event") not in (None, "enqueued", "status"):
            return False
        return data.get("status") == "queued" and data.get("queue") in self.queues


class SharedListener(Listener):
    """LISTEN on the connection that claims: one connection per waiting worker.

    Notifications that arrive while a claim runs on it wait in psycopg's backlog, which
    ``notifies()`` returns first, so none is missed. While it listens the connection is
    named ``runner:listen:<worker>`` (``runner workers``, pg_stat_activity); ``close``
    stops listening and gives the name back, so a running job's connection collects no
    notifications. A dropped connection is reopened by ``open``, in the Queue itself."""

    shares_claim_connection = True

    def __init__(self, queue: Queue, queues: list[str]) -> None:
        super().__init__(queue.dsn or "", queue.worker_id, queues)
        self.queue = queue

    def open(self) -> None:
        if self.queue.conn.broken or self.queue.conn.closed:
            self.queue.reconnect()
        name = sql.Literal(f"runner:listen:{self.worker_id}"[:63])
        try:
            # One message (no parameters: simple protocol), so the name says "listening"
            # exactly when it is.
            self.queue.conn.execute(sql.SQL("LISTEN {}; SET application_name = {}").format(
                sql.Identifier(NOTIFY_CHANNEL), name))
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"LISTEN failed: {exc}") from exc
        self.conn = self.queue.conn

    def close(self) -> None:
        if self.conn is not None and not (self.conn.broken or self.conn.closed):
            try:
                self.conn.execute(sql.SQL("UNLISTEN {}; RESET application_name").format(
                    sql.Identifier(NOTIFY_CHANNEL)))
            except psycopg.OperationalError:
                pass  # the claim's next statement reports it
        self.conn = None


class Poller(Listener):
    """No LISTEN connection at all (a transaction-mode pooler and no direct URL): the
    wait is the poll interval, so a job is seen within RUNNER_POLL_SECONDS."""

    shares_claim_connection = False

    def __init__(self, worker_id: str, queues: list[str]) -> None:
        super().__init__("", worker_id, queues)

    def open(self) -> None:
        pass

    def wait(self, seconds: float) -> bool:
        time.sleep(max(seconds, 0.0))
        return False


def wait_and_claim(
    claim: Callable[[], T | None], listener: Listener, *, wait_seconds: float,
    poll_seconds: float, stop: threading.Event,
    presence: Callable[[], None] | None = None, presence_seconds: float = 15.0,
    waiting: Callable[[], None] | None = None,
) -> T | None:
    """Claim now, or LISTEN until a job comes, re-checking every ``poll_seconds``.

    Returns the claim, or None when the deadline passes or ``stop`` is set. A dropped
    LISTEN connection is reopened with backoff until the deadline. ``presence`` is
    called about every ``presence_seconds`` while waiting (the worker row's last_seen_at);
    ``waiting`` once, when the first claim found nothing and the wait begins.
    """
    deadline = time.monotonic() + wait_seconds
    last_presence = time.monotonic()
    found = claim()  # the common case under load: no LISTEN connection needed at all
    if found is not None or stop.is_set() or wait_seconds <= 0:
        return found
    if waiting is not None:  # the queue had nothing: from now on the worker waits
        waiting()
    _reconnect(listener, deadline)
    try:
        while True:
            try:
                found = claim()
            except DatabaseUnavailable as exc:
                if not listener.shares_claim_connection:
                    raise
                # The one connection dropped between LISTEN and the wait: reopen it, as below.
                log.warning("listen_connection_lost", error=str(exc))
                _reconnect(listener, deadline)
                continue
            if found is not None or stop.is_set():
                return found
            next_poll = min(deadline, time.monotonic() + poll_seconds)
            while not stop.is_set():
                remaining = next_poll - time.monotonic()
                if remaining <= 0:
                    break
                if presence is not None and time.monotonic() - last_presence >= presence_seconds:
                    last_presence = time.monotonic()
                    presence()
                try:
                    if listener.wait(min(remaining, _SLICE_SECONDS)):
                        break
                except DatabaseUnavailable as exc:
                    log.warning("listen_connection_lost", error=str(exc))
                    _reconnect(listener, deadline)
                    break  # claim at once: a NOTIFY may have been missed while down
            if time.monotonic() >= deadline:
                return None if stop.is_set() else claim()
    finally:
        listener.close()


def _reconnect(listener: Listener, deadline: float) -> None:
    listener.close()
    retrying = Retrying(
        retry=retry_if_exception_type(DatabaseUnavailable),
        wait=wait_exponential(multiplier=0.2, max=5),
        stop=stop_after_delay(max(deadline - time.monotonic(), 1.0)),
        before_sleep=lambda state: log.warning(
            "listen_reconnect_retry", attempt=state.attempt_number,
            error=str(state.outcome.exception()) if state.outcome else None),
        reraise=True,
    )
    try:
        retrying(listener.open)
    except RetryError as exc:  # pragma: no cover - reraise=True makes this unreachable
        raise DatabaseUnavailable("the LISTEN connection could not be reopened") from exc
