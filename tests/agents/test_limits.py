"""Reset times read from usage-limit messages."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from runner.agents.limits import reset_time

NOW = datetime(2026, 11, 20, 23, 0, tzinfo=timezone.utc)  # 23:00 in Lisbon too (WET)


@pytest.mark.parametrize("text, expected", [
    ("Claude AI usage limit reached|1763686800", datetime.fromtimestamp(1763686800, timezone.utc)),
    ("You've hit your limit · resets 1pm (Europe/Lisbon)",
     datetime(2026, 11, 21, 13, 0, tzinfo=ZoneInfo("Europe/Lisbon"))),
    ("You've hit your 5-hour limit · resets 1:01am (UTC)", datetime(2026, 11, 21, 1, 1, tzinfo=timezone.utc)),
    ("You’ve hit your session limit · resets 11:30pm (UTC)", datetime(2026, 11, 20, 23, 30, tzinfo=timezone.utc)),
    ("You've hit your weekly limit · resets Nov 24, 3pm (America/New_York)",
     datetime(2026, 11, 24, 15, 0, tzinfo=ZoneInfo("America/New_York"))),
    ("You’ve hit your usage limit. Upgrade to Pro or try again at Nov 21st, 2026 1:04 AM.",
     datetime(2026, 11, 21, 1, 4).astimezone()),
    ("You've hit your usage limit. try again in 2 hours 5 minutes.",
     datetime(2026, 11, 21, 1, 5, tzinfo=timezone.utc)),
])
def test_reset_times(text: str, expected: datetime) -> None:
    assert reset_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["API Error: 500", "resets soon", "resets 25pm (UTC)", ""])
def test_no_reset_time(text: str) -> None:
    assert reset_time(text, now=NOW) is None


def test_unknown_zone_falls_back_to_local() -> None:
    assert reset_time("resets 1pm (Mars/Olympus)", now=NOW) is not None
