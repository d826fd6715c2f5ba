"""How long to wait before trying again: one policy for jobs and for the supervisor.

Each failure in a row doubles the wait, from ``start`` up to ``cap``:
start, 2·start, 4·start, … cap, cap, …
"""

from __future__ import annotations


def backoff(start: float, cap: float, failures: int) -> float:
    """The wait after the ``failures``-th failure in a row (1 for the first)."""
    if failures < 1:
        return 0.0
    # 2 ** 1000 would overflow a float; the cap is reached long before that.
    return float(min(start * 2 ** min(failures - 1, 64), cap))
