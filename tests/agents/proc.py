"""Small helpers for the end-to-end tests: waiting, and whether a process is really gone."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests import waiting


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "condition"):
    return waiting.wait_for(predicate, timeout, what)



def pid_in(path: Path, timeout: float = 30) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text().strip(), timeout, f"pid in {path}"))
