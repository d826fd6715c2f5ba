"""Reading a usage-limit reset time out of the words an agent CLI prints.

Claude Code: ``Claude AI usage limit reached|1763686800`` (older), ``You've hit your limit ·
resets 1pm (Europe/Lisbon)``, ``You've hit your 5-hour limit · resets 1:01am (UTC)``,
``… resets Nov 21, 3pm (America/New_York)``. Codex: ``… or try again at Nov 21st, 2026
1:04 AM.`` and ``… try again in 2 days 3 hours 5 minutes.`` A time without a date is
the next such time in that zone; a time without a zone is in the runner's local zone.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_EPOCH = re.compile(r"usage limit reached\|(\d{9,11})", re.I)
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_CLOCK = re.compile(
    r"(?:resets|try again at)\s+(?:(?P<mon>[A-Za-z]{3})[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?"
    r"\s*(?:(?P<year>\d{4}),?\s*)?(?:at\s+)?)?"
    r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)"
    r"(?:\s*\((?P<tz>[A-Za-z0-9_+\-/]{1,64})\))?", re.I)
_IN = re.compile(r"try again in\s+((?:\d+\s*(?:days?|hours?|minutes?|mins?|seconds?|secs?)[\s,and]*)+)", re.I)
_UNIT = re.compile(r"(\d+)\s*(day|hour|min|sec)", re.I)


def from_epoch(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    if value > 1e12:  # milliseconds
        value = value / 1000
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _zone(name: str | None) -> tzinfo:
    if name:
        if name.upper() == "UTC":
            return timezone.utc
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return datetime.now().astimezone().tzinfo or timezone.utc


def reset_time(text: str, now: datetime | None = None) -> datetime | None:
    """The reset moment named in ``text`` (UTC), or None when it names none."""
    now = now or datetime.now(timezone.utc)
    m = _EPOCH.search(text)
    if m:
        return from_epoch(int(m.group(1)))
    m = _IN.search(text)
    if m:
        seconds = 0
        for amount, unit in _UNIT.findall(m.group(1)):
            seconds += int(amount) * {"day": 86400, "hour": 3600, "min": 60, "sec": 1}[unit.lower()]
        return now + timedelta(seconds=seconds) if seconds else None
    m = _CLOCK.search(text)
    if not m:
        return None
    hour12, minute = int(m.group("h")), int(m.group("m") or 0)
    if not 1 <= hour12 <= 12 or minute > 59:
        return None
    hour = hour12 % 12 + (12 if m.group("ampm").lower().startswith("p") else 0)
    zone = _zone(m.group("tz"))
    local_now = now.astimezone(zone)
    try:
        if m.group("mon") and m.group("mon").lower()[:3] in _MONTHS:
            year = int(m.group("year") or local_now.year)
            when = datetime(year, _MONTHS[m.group("mon").lower()[:3]], int(m.group("day")),
                            hour, minute, tzinfo=zone)
            if not m.group("year") and when < local_now - timedelta(days=1):
                when = when.replace(year=year + 1)
        else:
            when = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if when <= local_now:
                when += timedelta(days=1)
    except ValueError:
        return None
    return when.astimezone(timezone.utc)
