"""The lease heartbeat: renew the claim about every third of the lease, in the background.

It owns a connection of its own (the main one may be busy), and answers one question
for the process loop: should the agent stop, and why — the claim was lost, an operator
asked to cancel, or the lease ran out while the database could not be reached.
"""

from __future__ import annotations

import threading
import time

import structlog

from runner.errors import DatabaseUnavailable
from runner.outcome import StopReason
from runner.queue import Claim, Queue

log = structlog.get_logger("runner.heartbeat")

PRESENCE_SECONDS = 15.0


class Heartbeat:
    def __init__(self, dsn: str, worker_id: str, claim: Claim, lease_seconds: float,
                 interval: float | None = None) -> None:
        self.dsn = dsn
        self.worker_id = worker_id
        self.claim = claim
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else max(lease_seconds / 3, 0.5)
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self._last_renewed = time.monotonic()  # the claim itself set the lease
        self._queue: Queue | None = None

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def stop_reason(self) -> str | None:
        if self.lost.is_set():
            return StopReason.LEASE_LOST
        if self.cancel_requested.is_set():
            return StopReason.CANCELLED
        return None

    def _run(self) -> None:
        # The lease is renewed every `interval`; between renewals the worker row is touched
        # every PRESENCE_SECONDS so that `runner workers` does not show a busy worker gone.
        next_beat = time.monotonic() + self.interval
        try:
            while not self._stop.wait(max(0.0, min(PRESENCE_SECONDS, next_beat - time.monotonic()))):
                if time.monotonic() < next_beat:
                    self._touch_worker()
                    continue
                next_beat = time.monotonic() + self.interval
                self.beat()
                if self.lost.is_set():
                    return
        finally:
            if self._queue is not None:
                self._queue.close()

    def beat(self) -> None:
        try:
            if self._queue is None:
                self._queue = Queue.open(self.dsn, self.worker_id, "heartbeat")
            row = self._queue.renew(self.claim, self.lease_seconds)
        except DatabaseUnavailable as exc:
            if self._queue is not None:
                self._queue.close()
                self._queue = None
            overdue = time.monotonic() - self._last_renewed
            log.warning("lease_renew_failed", error=str(exc), seconds_since_renewed=round(overdue, 1))
            if overdue >= self.lease_seconds:
                # Another worker may have taken the job by now; we must stop writing.
                log.error("lease_expired_unrenewed", job_id=str(self.claim.id))
                self.lost.set()
            return
        if row is None:
            log.warning("claim_lost", job_id=str(self.claim.id))
            self.lost.set()
            return
        self._last_renewed = time.monotonic()
        self._touch_worker()
        if row["cancel_requested"] and not self.cancel_requested.is_set():
            log.info("cancel_requested", job_id=str(self.claim.id))
            self.cancel_requested.set()

    def _touch_worker(self) -> None:
        # Presence for `runner workers` while the agent runs; never a reason to stop.
        try:
            if self._queue is None:
                self._queue = Queue.open(self.dsn, self.worker_id, "heartbeat")
            self._queue.touch_worker()
        except DatabaseUnavailable as exc:
            if self._queue is not None:
                self._queue.close()
                self._queue = None
            log.warning("worker_presence_failed", error=str(exc))
