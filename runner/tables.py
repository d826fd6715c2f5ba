"""Plain-text tables for the terminal (``runner jobs``, ``workers``, ``jobs --watch``).

Times are shown with their zone written (runner/clock.py: ``2026-12-02 04:28:24Z``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runner.clock import date_time


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return date_time(value)
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[fmt(r.get(c)).replace("\n", " ")[:60] for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
