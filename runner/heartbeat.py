"""The lease heartbeat: renew the claim about every third of the lease, in the background,
and hear a cancel or a lost claim within a second.

It owns a connection of its own (the main one may be busy), and answers one question
for the process loop: should the agent stop, and why — the claim was lost, an operator
asked to cancel, or the lease ran out while the database could not be reached.

That connection LISTENs on ``runner_jobs``: the trigger announces a cancel request, a
status change and a claim taken over (migration 0003_live). A notification about this
job is only a hint — the row is read again under the claim token, and only what the row
says stops the agent. The renewal stays the safety net for a notification missed while
the connection was down (after a reconnect the row is read at once, too).

The same thread writes the job's progress snapshots (runner/progress.py): the agent loop
only hands them over (``report``), so a slow database never holds up the agent's output,
and a progress write that fails is logged and dropped — it never stops the run. Its
connection has a statement timeout, so a database that hangs cannot hold the thread (and
the cancel check) for longer than that.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from runner.errors import DatabaseUnavailable, DatabaseWriteFailed
from runner.outcome import StopReason
from runner.progress import PROGRESS_SECONDS
from runner.queue import NOTIFY_CHANNEL, Claim, Queue
from runner.wakeup import Wakeup, readable

log = structlog.get_logger("runner.heartbeat")

PRESENCE_SECONDS = 15.0
# How long one wait for a notification lasts at most, and the retry pace while the
# database is down. The end of the job and an urgent progress snapshot wake the thread
# at once (its Wakeup), not at the end of a slice.
LISTEN_SLICE_SECONDS = 0.2
# Notifications this worker sends itself about its job: never a reason to look.
_OWN_EVENTS = {"progress"}
STATEMENT_TIMEOUT_MS = 5000
REOPEN_SECONDS = 1.0  # between attempts to reopen the LISTEN connection while it is down
# Urgent snapshots (tool start/end, turn) waiting while the database is slow: the oldest
# go first when more pile up (each later one holds the whole state anyway).
_MAX_PENDING = 50


class Heartbeat:
    def __init__(self, dsn: str, worker_id: str, claim: Claim, lease_seconds: float,
                 interval: float | None = None, start_on_enter: bool = True) -> None:
        self.dsn = dsn
        self.start_on_enter = start_on_enter
        self.worker_id = worker_id
        self.claim = claim
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else max(lease_seconds / 3, 0.5)
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        # Called (from the heartbeat's thread) the moment the agent must stop: the agent
        # loop's own Wakeup, so a cancel does not wait for its next poll.
        self.on_stop: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._wake = Wakeup()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self._last_renewed = time.monotonic()  # the claim itself set the lease
        self._queue: Queue | None = None
        self._listening = False
        self._reopen_at = 0.0
        self._progress_lock = threading.Lock()
        self._urgent: deque[dict[str, Any]] = deque(maxlen=_MAX_PENDING)
        self._latest: dict[str, Any] | None = None
        self._last_progress = -float("inf")
        self.progress_written = 0

    def __enter__(self) -> "Heartbeat":
        if self.start_on_enter:
            self.start()
        return self

    def start(self) -> None:
        """Start the thread; once is enough (a second call does nothing).

        The iteration calls it once the agent is spawned (start_on_enter=False): the thread's first work is opening
        its connection, Python code that holds the GIL, and the spawn waited for it — about
        2.5 ms between the claim and the agent (benchmarks/agent_start.py). The lease the
        claim set lasts far longer than that; a cancel already asked is read at its start."""
        if self._thread.ident is None and not self._stop.is_set():
            self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self.on_stop = None  # the agent loop is over: nothing of it to wake any more
        self._stop.set()
        self._wake.wake()  # out of its wait now: the job's outcome waits for its last write
        if self._thread.ident is not None:  # never started (no agent spawned): nothing to end
            self._thread.join(timeout=15)
        if not self._thread.is_alive():  # (a thread stuck past the join keeps its pipe)
            self._wake.close()

    def report(self, snapshot: dict[str, Any], urgent: bool) -> None:
        """Hand a progress snapshot to the heartbeat's thread (called from the agent loop)."""
        with self._progress_lock:
            if urgent:
                self._urgent.append(snapshot)
                self._latest = None  # the urgent one is newer and holds everything
            else:
                self._latest = snapshot
        # A tool's start or end is shown now, not at the slice's end — unless a batch went
        # out less than a slice ago: then the slice's end takes it, so an agent that prints
        # tool events without end still costs at most one batch of writes per slice.
        if urgent and time.monotonic() - self._last_progress >= LISTEN_SLICE_SECONDS:
            self._wake.wake()

    def stop_reason(self) -> str | None:
        if self.lost.is_set():
            return StopReason.LEASE_LOST
        if self.cancel_requested.is_set():
            return StopReason.CANCELLED
        return None

    def _run(self) -> None:
        # The lease is renewed every `interval`; between renewals the worker row is touched
        # every PRESENCE_SECONDS so that `runner workers` does not show a busy worker gone.
        # In between, the thread waits on its LISTEN connection.
        now = time.monotonic()
        next_beat, next_presence = now + self.interval, now + PRESENCE_SECONDS
        try:
            while not self._stop.is_set():
                self._write_progress()
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.interval
                    self.beat()
                elif now >= next_presence:
                    next_presence = now + PRESENCE_SECONDS
                    self._touch_worker()
                elif self._wait_for_notice(min(next_beat, next_presence) - now):
                    self.check("notified")
                if self.lost.is_set():
                    return
            self._write_progress(final=True)  # the last tool's end, before the outcome
        finally:
            self._close()

    # -- the connection ------------------------------------------------------------------

    def _open(self) -> Queue:
        if self._queue is None:
            self._queue = Queue.open(self.dsn, self.worker_id, "heartbeat",
                                     options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
            self._listening = False
        if not self._listening:
            try:
                self._queue.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except psycopg.OperationalError as exc:
                self._close()
                raise DatabaseUnavailable(f"the heartbeat could not LISTEN: {exc}") from exc
            self._listening = True
            # Whatever was announced before we listened (between the claim and now, or
            # while the connection was down) is read from the row itself.
            self.check("listening")
            if self._queue is None:  # the check found the database gone again
                raise DatabaseUnavailable("the heartbeat's connection dropped")
        return self._queue

    def _close(self) -> None:
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        self._listening = False

    def _wait_for_notice(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (sliced) for a notification about this job."""
        seconds = max(0.0, min(seconds, LISTEN_SLICE_SECONDS))
        if self._queue is None and time.monotonic() < self._reopen_at:
            self._stop.wait(seconds)  # the database was down a moment ago: not every slice
            return False
        try:
            conn = self._open().conn
        except DatabaseUnavailable as exc:
            log.debug("heartbeat_listen_unavailable", error=str(exc))
            self._reopen_at = time.monotonic() + REOPEN_SECONDS
            self._stop.wait(seconds)
            return False
        try:
            # What came in while a statement ran waits in psycopg's backlog, where the
            # socket no longer shows it: read first, then wait on the socket and the Wakeup.
            if self._notified(conn):
                return True
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                ready = readable([conn.fileno(), self._wake.fileno()], left)
                if self._wake.fileno() in ready:
                    self._wake.clear()
                    return False
                if ready and self._notified(conn):
                    return True
                # (other jobs' notifications: the slice goes on, as the wait it replaced)
            return False
        except psycopg.OperationalError as exc:
            log.warning("heartbeat_listen_dropped", error=" ".join(str(exc).split()))
            self._close()
        return False

    def _notified(self, conn: psycopg.Connection) -> bool:
        """Whether a notification already received names this job (all of them read)."""
        notes = list(conn.notifies(timeout=0))
        return any(self._about_this_job(note.payload) for note in notes)

    def _about_this_job(self, payload: str) -> bool:
        try:
            data = json.loads(payload)
        except ValueError:
            return False
        if not isinstance(data, dict) or data.get("id") != str(self.claim.id):
            return False
        return data.get("event") not in _OWN_EVENTS

    # -- reading the row -------------------------------------------------------------------

    def check(self, why: str) -> None:
        """Read the row under our claim token: lost, or cancel requested? (No lease change.)"""
        try:
            queue = self._queue if self._listening else self._open()
            assert queue is not None
            row = queue.claim_state(self.claim)
        except DatabaseUnavailable as exc:
            log.warning("claim_check_failed", error=str(exc))
            self._close()
            return
        if why == "notified":
            log.info("claim_checked", why=why, held=row is not None,
                     cancel_requested=bool(row and row["cancel_requested"]))
        self._apply(row)

    def beat(self) -> None:
        try:
            row = self._open().renew(self.claim, self.lease_seconds)
        except DatabaseUnavailable as exc:
            self._close()
            overdue = time.monotonic() - self._last_renewed
            log.warning("lease_renew_failed", error=str(exc), seconds_since_renewed=round(overdue, 1))
            if overdue >= self.lease_seconds:
                # Another worker may have taken the job by now; we must stop writing.
                log.error("lease_expired_unrenewed", job_id=str(self.claim.id))
                self._must_stop(self.lost)
            return
        if row is not None:
            self._last_renewed = time.monotonic()
            self._touch_worker()
        self._apply(row)

    def _apply(self, row: dict | None) -> None:
        if self.lost.is_set():
            return
        if row is None:
            log.warning("claim_lost", job_id=str(self.claim.id))
            self._must_stop(self.lost)
            return
        if row["cancel_requested"] and not self.cancel_requested.is_set():
            log.info("cancel_requested", job_id=str(self.claim.id))
            self._must_stop(self.cancel_requested)

    def _must_stop(self, why: threading.Event) -> None:
        why.set()
        if self.on_stop is not None:
            self.on_stop()

    # -- progress ----------------------------------------------------------------------------

    def _write_progress(self, final: bool = False) -> None:
        with self._progress_lock:
            due = bool(self._urgent) or (self._latest is not None and (
                final or time.monotonic() - self._last_progress >= PROGRESS_SECONDS))
            if not due:
                return
            batch = list(self._urgent) if self._urgent else [self._latest]
            self._urgent.clear()
            self._latest = None
        self._last_progress = time.monotonic()
        for snapshot in batch:
            try:
                self._open().progress(self.claim, {**snapshot, "attempt": self.claim.job.get("attempts")})
                self.progress_written += 1
            except DatabaseUnavailable as exc:
                self._close()
                log.warning("progress_not_written", error=str(exc), dropped=len(batch))
                return
            except DatabaseWriteFailed as exc:
                log.warning("progress_not_written", error=str(exc))

    def _touch_worker(self) -> None:
        # Presence for `runner workers` while the agent runs; never a reason to stop.
        try:
            self._open().touch_worker()
        except DatabaseUnavailable as exc:
            self._close()
            log.warning("worker_presence_failed", error=str(exc))
