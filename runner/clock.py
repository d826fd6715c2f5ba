"""Times as the runner reads and shows them.

Stored and exchanged as aware UTC (ISO 8601 in JSON). Shown to a person in one convention
for every command (``jobs``, ``show``, ``workers``, ``logs``, ``--watch``), chosen by
``RUNNER_TIME_ZONE``: ``utc`` (default; ``18:20:01Z``) or ``local`` (the machine's TZ, with
its offset written: ``19:20:01+0100``). Either way the zone is on the screen.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp ('Z' or offset) or Unix seconds, as an aware datetime."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), timezone.utc)
        parsed = datetime.fromisoformat(str(value).strip())
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def shown_local() -> bool:
    """RUNNER_TIME_ZONE=local: times are shown in the machine's zone (else UTC)."""
    return (os.environ.get("RUNNER_TIME_ZONE") or "utc").strip().lower() == "local"


def _shown(when: datetime) -> datetime:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone() if shown_local() else when.astimezone(timezone.utc)


def _zone(when: datetime) -> str:
    return when.strftime("%z") if shown_local() else "Z"


def clock_time(when: datetime) -> str:
    """18:20:01Z, or 19:20:01+0100 with RUNNER_TIME_ZONE=local."""
    shown = _shown(when)
    return shown.strftime("%H:%M:%S") + _zone(shown)


def date_time(when: datetime) -> str:
    """2026-12-02 18:20:01Z, or 2026-12-02 19:20:01+0100 with RUNNER_TIME_ZONE=local."""
    shown = _shown(when)
    return shown.strftime("%Y-%m-%d %H:%M:%S") + _zone(shown)
