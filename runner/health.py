"""``runner health``: is this worker alive and able to work? Read from files only.

The supervisor (bin/run-agent.sh) keeps ``$RUNNER_STATE_DIR/state.json`` fresh (at least
every 30 s) and writes the ``UNHEALTHY`` / ``TOKEN_EXPIRED`` markers. The report is the
state file's fields plus computed ones: ``healthy``, ``reasons``, ``markers`` (name →
text), ``stale`` and ``state_age_seconds``. Unhealthy when a marker exists, when
state.json is missing or unreadable, or when its ``updated_at`` is older than
RUNNER_HEALTH_STALE_SECONDS. The verdict never consults the database: a health check must
answer when the database is down (that is the supervisor's business, and UNHEALTHY says
it). ``runner health`` adds, best effort, the queue pauses in force (``pauses``: an
operator's, and the guard's against an overloaded model API, runner/guard.py) — a paused
queue does not make a worker unhealthy.

``runner health --serve`` serves the same over HTTP (runner/healthserver.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from runner.clock import parse_time
from runner.contract import MARKERS, StateFile, SupervisorStatus
from runner.settings import Settings

log = structlog.get_logger("runner.health")

STATE_FILE = StateFile.STATE
SUPERVISOR_STATUSES = tuple(SupervisorStatus)
_MARKER_MAX_CHARS = 4000


def read_markers(state_dir: Path) -> dict[str, str]:
    markers = {}
    for name in MARKERS:
        path = state_dir / name
        if path.exists():
            try:
                markers[name] = path.read_text(errors="replace").strip()[:_MARKER_MAX_CHARS]
            except OSError as exc:
                markers[name] = f"(unreadable: {exc.strerror})"
    return markers


def report(state_dir: Path, stale_seconds: float, now: datetime | None = None) -> dict[str, Any]:
    """The health report: state.json's fields plus healthy, reasons, markers, stale."""
    now = now or datetime.now(timezone.utc)
    path = state_dir / STATE_FILE
    reasons: list[str] = []
    state: dict[str, Any] = {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            state = loaded
        else:
            reasons.append(f"{path} does not hold a JSON object")
    except FileNotFoundError:
        reasons.append(f"{path} is missing: the supervisor has not reported (yet)")
    except (OSError, ValueError) as exc:
        reasons.append(f"{path} cannot be read: {exc}")

    age = None
    stale = True
    if state:
        updated = parse_time(state.get("updated_at"))
        if updated is None:
            reasons.append(f"state.json has no readable updated_at ({state.get('updated_at')!r})")
        else:
            age = round((now - updated).total_seconds(), 1)
            stale = age > stale_seconds
            if stale:
                reasons.append(f"state.json was last updated {age:.0f} s ago (more than "
                               f"{stale_seconds:g} s): the supervisor is stuck or gone")

    if state.get("status") in (SupervisorStatus.STOPPED, SupervisorStatus.STOPPING):
        # A supervisor that stopped (or is stopping) claims nothing, however fresh its file.
        reasons.append(f"the supervisor is {state['status']} (pid {state.get('supervisor_pid')})")
    markers = read_markers(state_dir)
    for name, text in markers.items():
        reasons.append(f"{name}: {text}" if text else name)
    return {**state, "healthy": not reasons, "reasons": reasons, "markers": markers,
            "stale": stale, "state_age_seconds": age, "state_dir": str(state_dir)}


def check(settings: Settings) -> int:
    """``runner health``: print the report; 0 when healthy, 1 otherwise."""
    rep = report(settings.state_dir, settings.health_stale_seconds)
    rep["pauses"] = pauses(settings)
    print(json.dumps(rep, indent=2, sort_keys=True, default=str))
    return 0 if rep["healthy"] else 1


def pauses(settings: Settings) -> list[dict[str, Any]] | str:
    """The pauses in force, or why they could not be read (never raises)."""
    if not settings.has_database:
        return "DATABASE_URL is not set"
    from runner.dbconn import connect
    from runner.queue import Queue
    try:
        conn = connect(settings.dsn, "health", settings.worker_id, connect_timeout=3,
                       options="-c statement_timeout=5000")
        with Queue(conn, settings.worker_id) as q:
            return q.pauses()
    except Exception as exc:  # the database down: the health verdict does not depend on it
        return f"the pauses could not be read: {' '.join(str(exc).split())}"
