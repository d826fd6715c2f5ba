"""The iteration's side of the contract with bin/run-agent.sh: small files in RUNNER_STATE_DIR.

* ``current_job`` — the id of the job this worker holds, while it holds one;
* ``usage_limit_reset_at`` — Unix seconds, written before exiting 4;
* ``last_error`` — the last runner-side fault ("log directory full"), one line, for
  ``UNHEALTHY``/health to show.

Every file passes the redactor (runner/secrets.py) and is made storable first.

Each is replaced atomically so the supervisor never reads half a file.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path

from runner import secrets
from runner.contract import StateFile, SupervisorStatus
from runner.workspace import made_ahead


def _write(path: Path, text: str, staged: bool = False) -> None:
    text = secrets.safe_text(text, None) or ""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    if staged:  # its temporary made while the worker waited (runner/staging.py)
        _take_ready(path.parent / CURRENT_JOB_READY, tmp)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# An empty file runner/staging.py makes while the worker waits: current_job's temporary,
# renamed and written rather than created (a new file costs ~0.7 ms on a slow disk).
CURRENT_JOB_READY = ".current_job.ready"


def _take_ready(ready: Path, tmp: Path) -> None:
    if made_ahead(ready, stat.S_ISREG):
        try:
            os.rename(ready, tmp)
        except OSError:
            pass  # none made: the temporary is created, as it always was


LAST_ERROR_FILE = StateFile.LAST_ERROR


def set_last_error(state_dir: Path, message: str) -> None:
    """Best effort: the disk that failed may be this one."""
    line = " ".join(str(message).split())[:500]
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        _write(state_dir / LAST_ERROR_FILE, f"{stamp} {line}\n")
    except OSError:
        pass


def read_last_error(state_dir: Path) -> str | None:
    try:
        return (state_dir / LAST_ERROR_FILE).read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def set_current_job(state_dir: Path, job_id: str) -> None:
    _write(state_dir / StateFile.CURRENT_JOB, f"{job_id}\n", staged=True)


def clear_current_job(state_dir: Path) -> None:
    (state_dir / StateFile.CURRENT_JOB).unlink(missing_ok=True)


def set_usage_limit_reset(state_dir: Path, reset_at: datetime) -> None:
    _write(state_dir / StateFile.USAGE_LIMIT_RESET, f"{int(reset_at.timestamp())}\n")


# -- iteration durations, for `runner health --serve` /metrics ----------------------------
# One JSON line per iteration in ``iterations.jsonl``: {"at", "seconds", "exit_code",
# "job_id"}. Kept small: past _ITERATIONS_MAX_BYTES the older half is dropped.

ITERATIONS_FILE = StateFile.ITERATIONS
_ITERATIONS_MAX_BYTES = 256 * 1024


def record_iteration(state_dir: Path, seconds: float, exit_code: int,
                     job_id: str | None = None) -> None:
    path = state_dir / ITERATIONS_FILE
    line = secrets.safe_text(json.dumps({
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3), "exit_code": exit_code, "job_id": job_id}), None) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:  # one short append: atomic enough
        fh.write(line)
    if path.stat().st_size > _ITERATIONS_MAX_BYTES:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        _write(path, "".join(lines[len(lines) // 2:]))


def read_iterations(state_dir: Path) -> list[dict]:
    try:
        text = (state_dir / ITERATIONS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("seconds"), (int, float)):
            rows.append(row)
    return rows


def _agent_file(state_dir: Path, worker_id: str) -> Path:
    # One record per worker: workers may share a state dir and must never act on each
    # other's agents.
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in worker_id)
    return state_dir / f"agent.{safe}"


def set_agent(state_dir: Path, worker_id: str, job_id: str, pgid: int) -> None:
    """The running agent's process group and its iteration's pid, so the next iteration
    can end the agent if this one dies (SIGKILL, OOM) while the agent goes on working on
    a job that will be handed back."""
    _write(_agent_file(state_dir, worker_id), f"{job_id} {pgid} {os.getpid()}\n")


def clear_agent(state_dir: Path, worker_id: str) -> None:
    _agent_file(state_dir, worker_id).unlink(missing_ok=True)


def read_agent(state_dir: Path, worker_id: str) -> tuple[str, int, int] | None:
    try:
        job_id, pgid, owner = _agent_file(state_dir, worker_id).read_text().split()
        return job_id, int(pgid), int(owner)
    except (OSError, ValueError):
        return None


def supervisor_stopping(state_dir: Path) -> bool:
    """Whether the supervisor that started this iteration (our parent) is stopping.

    A SIGTERM the supervisor passes on in the instant between its fork and the exec of
    ``python -m runner.one_job`` reaches the forked shell, not the iteration, and is lost;
    the iteration would then wait out RUNNER_WAIT_SECONDS while ``docker stop`` waits for
    it. ``state.json`` says ``stopping`` by then, so the iteration reads it once its own
    signal handlers are in place. Only our parent's record counts: a stale file of a
    supervisor that died mid-stop stops nothing."""
    try:
        record = json.loads((state_dir / StateFile.STATE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("status") == SupervisorStatus.STOPPING
            and record.get("supervisor_pid") == os.getppid())
