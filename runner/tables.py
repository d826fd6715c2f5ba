"""Plain-text tables for the terminal (``runner jobs``, ``workers``, ``jobs --watch``).

Times are shown in UTC and say so (``2026-12-02 04:28:24Z``), whatever the machine's zone.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[fmt(r.get(c)).replace("\n", " ")[:60] for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
