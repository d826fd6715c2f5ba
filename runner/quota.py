"""The quota gate: before claiming, ask an operator's probe how much quota is left.

RUNNER_QUOTA_PROBE is a command (split like a shell would, never run through one) that
prints one JSON object: ``{"pct": <remaining percent, 0-100>, "reset_at": <ISO-8601 or
Unix seconds, optional>}``. When ``pct`` is below RUNNER_MIN_QUOTA_PCT the iteration
waits until ``reset_at`` (at most RUNNER_QUOTA_MAX_WAIT_SECONDS; that long when
``reset_at`` is missing, no wait when it is past) before it claims, so that a job is not
started only to hit the usage limit half-way. SIGTERM ends the wait at once.

A probe that fails, times out or prints something else is logged in one line and
ignored: the gate never stops a worker from working.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import structlog

from runner.clock import parse_time
from runner.secrets import RUNNER_OWN_SECRET_NAMES
from runner.settings import Settings

log = structlog.get_logger("runner.quota")

# Not the probe's business: the database and the push token.
_WITHHELD = RUNNER_OWN_SECRET_NAMES
_PRESENCE_SECONDS = 15.0
_SLICE_SECONDS = 0.5


class ProbeError(Exception):
    pass


@dataclass(frozen=True)
class Quota:
    pct: float
    reset_at: datetime | None


def probe(command: str, timeout: float) -> Quota:
    """Run the probe and read its answer, or raise ProbeError saying what went wrong."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ProbeError(f"RUNNER_QUOTA_PROBE cannot be split into words: {exc}") from None
    if not argv:
        raise ProbeError("RUNNER_QUOTA_PROBE is empty")
    env = {k: v for k, v in os.environ.items() if k not in _WITHHELD}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, errors="replace")
    except FileNotFoundError:
        raise ProbeError(f"{argv[0]!r} was not found") from None
    except PermissionError:
        raise ProbeError(f"{argv[0]!r} is not executable") from None
    except subprocess.TimeoutExpired:
        raise ProbeError(f"it did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        tail = " ".join(done.stderr.split())[-300:]
        raise ProbeError(f"it exited {done.returncode}" + (f": {tail}" if tail else ""))
    return parse(done.stdout)


def parse(text: str) -> Quota:
    try:
        data = json.loads(text)
    except ValueError:
        raise ProbeError(f"its output is not JSON: {' '.join(text.split())[:200]!r}") from None
    if not isinstance(data, dict):
        raise ProbeError("its output is not a JSON object")
    pct = data.get("pct")
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise ProbeError(f'"pct" must be a number from 0 to 100, got {pct!r}')
    reset = data.get("reset_at")
    if isinstance(reset, (int, float)) and not isinstance(reset, bool) and reset > 1e12:
        reset = reset / 1000  # milliseconds
    reset_at = parse_time(reset)
    if reset is not None and reset_at is None:
        raise ProbeError(f'"reset_at" must be ISO-8601 or Unix seconds, got {reset!r}')
    return Quota(float(pct), reset_at)


def gate(settings: Settings, stop: threading.Event,
         presence: Callable[[], None] | None = None) -> bool:
    """Wait while the quota is low. False only when ``stop`` was set (do not claim)."""
    if not settings.quota_probe:
        return not stop.is_set()
    try:
        quota = probe(settings.quota_probe, settings.quota_probe_timeout_seconds)
    except ProbeError as exc:
        log.warning("quota_probe_failed", error=f"quota probe failed, ignored: {exc}")
        return not stop.is_set()
    if quota.pct >= settings.min_quota_pct:
        log.info("quota_ok", pct=quota.pct, min_pct=settings.min_quota_pct)
        return not stop.is_set()
    now = datetime.now(timezone.utc)
    if quota.reset_at is None:  # no idea when it resets: the longest wait
        wait = settings.quota_max_wait_seconds
    else:  # a reset time already past means the quota has just come back: no wait
        wait = max(0.0, min((quota.reset_at - now).total_seconds(), settings.quota_max_wait_seconds))
    _presence(presence)
    log.warning("quota_low_waiting", pct=quota.pct, min_pct=settings.min_quota_pct,
                reset_at=quota.reset_at.isoformat() if quota.reset_at else None,
                wait_seconds=round(wait, 1))
    deadline = time.monotonic() + wait
    next_presence = time.monotonic() + _PRESENCE_SECONDS
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # Sleep in slices, never stop.wait(): the SIGTERM handler calls stop.set(), and an
        # Event waited on in the main thread can deadlock when its handler sets it there.
        time.sleep(min(remaining, _SLICE_SECONDS))
        if time.monotonic() >= next_presence:
            next_presence = time.monotonic() + _PRESENCE_SECONDS
            _presence(presence)
    if stop.is_set():
        return False
    log.info("quota_wait_over")
    return True


def _presence(presence: Callable[[], None] | None) -> None:
    if presence is None:
        return
    try:
        presence()
    except Exception as exc:  # the database may be down; the wait goes on
        log.warning("worker_presence_failed", error=str(exc))
