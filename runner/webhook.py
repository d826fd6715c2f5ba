"""Webhook deliveries for web apps that cannot LISTEN (a serverless app holds no connection).

A trigger writes one ``webhook_outbox`` row per final status — ``job.succeeded``,
``job.failed``, ``job.blocked`` (its question in ``job.question``), ``job.cancelled`` — in
the status change's own transaction, so nothing is lost when the app is down. Workers POST
them to ``RUNNER_WEBHOOK_URL``: at the start of each iteration, after recording a job, and
every presence beat while waiting for work. A 2xx marks it delivered; anything else (or no
answer within ``RUNNER_WEBHOOK_TIMEOUT_SECONDS``) retries it with a doubling backoff up to
an hour, for ever (``runner show`` lists each delivery and its last error).

At least once: a worker that dies between the POST and marking it sends it again after the
lease. Every delivery carries its id (``X-Runner-Delivery``, also ``id`` in the body) for
the app to drop repeats. The signature (``X-Runner-Signature: t=<unix>,v1=<hex>``) is
HMAC-SHA256 with ``RUNNER_WEBHOOK_SECRET`` over ``"<t>." + body``; the app recomputes it
and refuses a ``t`` too far from its clock (replay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import structlog

from runner.queue import Queue
from runner.settings import Settings

log = structlog.get_logger("runner.webhook")

LEASE_SECONDS = 60  # a delivery in flight is left alone by other workers this long
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS = 10, 3600
MAX_PER_CALL = 20


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float | None = None,
           tolerance: float = 300) -> bool:
    """What a receiver does (documented in docs/live.md; used by the tests)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def retry_seconds(attempts: int) -> float:
    return float(min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


def _where(url: str) -> str:
    # The URL may carry a token in its query: logs name only its host.
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def deliver_due(queue: Queue, settings: Settings, limit: int = MAX_PER_CALL) -> int:
    """POST the deliveries that are due, one at a time; stop at the first failure (the app
    is down: the rest wait for their turn). Returns how many were delivered. Never raises:
    a webhook is never a reason for an iteration to fail."""
    if not settings.webhook_url or settings.webhook_secret is None:
        return 0
    delivered = 0
    try:
        for _ in range(limit):
            row = queue.webhook_next(LEASE_SECONDS)
            if row is None:
                break
            if not _post(queue, settings, row):
                break
            delivered += 1
    except Exception as exc:  # noqa: BLE001 - the database or a bug: next time
        log.warning("webhook_delivery_skipped", error=str(exc))
    return delivered


def _post(queue: Queue, settings: Settings, row: dict[str, Any]) -> bool:
    assert settings.webhook_url and settings.webhook_secret is not None
    delivery = str(row["id"])
    body = json.dumps({"id": delivery, "event": row["event"],
                       "created_at": row["created_at"].isoformat(), **row["body"]},
                      sort_keys=True, default=str).encode()
    now = int(time.time())
    request = urllib.request.Request(settings.webhook_url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "runner-webhook",
        "X-Runner-Delivery": delivery, "X-Runner-Event": row["event"],
        "X-Runner-Attempt": str(row["attempts"]),
        "X-Runner-Signature": signature(settings.webhook_secret.get_secret_value(), now, body),
    })
    status: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=settings.webhook_timeout_seconds) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        error = f"no answer from {_where(settings.webhook_url)}: {getattr(exc, 'reason', exc)}"
    else:
        queue.webhook_delivered(row["id"], status)
        log.info("webhook_delivered", delivery=delivery, event_name=row["event"],
                 job_id=str(row["job_id"]), attempt=row["attempts"], status=status)
        return True
    wait = retry_seconds(row["attempts"])
    queue.webhook_failed(row["id"], status, error, wait)
    log.warning("webhook_failed", delivery=delivery, event_name=row["event"],
                job_id=str(row["job_id"]), attempt=row["attempts"], error=error,
                retry_in_seconds=wait)
    return False
