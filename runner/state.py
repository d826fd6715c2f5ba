"""The iteration's side of the contract with bin/run-agent.sh: small files in RUNNER_STATE_DIR.

* ``current_job`` — the id of the job this worker holds, while it holds one;
* ``usage_limit_reset_at`` — Unix seconds, written before exiting 4.

Each is replaced atomically so the supervisor never reads half a file.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def set_current_job(state_dir: Path, job_id: str) -> None:
    _write(state_dir / "current_job", f"{job_id}\n")


def clear_current_job(state_dir: Path) -> None:
    (state_dir / "current_job").unlink(missing_ok=True)


def set_usage_limit_reset(state_dir: Path, reset_at: datetime) -> None:
    _write(state_dir / "usage_limit_reset_at", f"{int(reset_at.timestamp())}\n")
