"""Real supervisor loops (bin/run-agent.sh running `python -m runner.one_job`) for the
fault tests, and the small process helpers they need.

A module of its own (not conftest.py) so test files import it by a unique name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests import waiting

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bin" / "run-agent.sh"

# Short timings: killed claims come back fast, failures back off briefly.
FAST_LOOP = {
    "RUNNER_BACKOFF_START": "0.1",
    "RUNNER_BACKOFF_MAX": "0.5",
    "RUNNER_MAX_CONSECUTIVE_FAILURES": "5",
    "RUNNER_STATE_HEARTBEAT_SECONDS": "1",
    "RUNNER_LEASE_SECONDS": "3",
    "RUNNER_WAIT_SECONDS": "1",
    "RUNNER_POLL_SECONDS": "0.5",
    "RUNNER_RETRY_BACKOFF_SECONDS": "0.2",
    "RUNNER_RETRY_BACKOFF_MAX_SECONDS": "1",
    "RUNNER_PRUNE_AFTER_DAYS": "0",
    "RUNNER_KILL_GRACE_SECONDS": "1",
}
EXITED = re.compile(r"iteration (\d+) exited (\d+)")


def wait_for(predicate, timeout: float, what: str = "condition", every: float = 0.05):
    return waiting.wait_for(predicate, timeout, what, every)



def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Direct children of pid (all its threads)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Worker:
    """One supervisor (bin/run-agent.sh) with its own state and log directories."""

    def __init__(self, root: Path, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.dir = root / name
        self.state_dir = self.dir / "state"
        self.log_dir = self.dir / "logs"
        self.stderr_path = self.dir / "supervisor.log"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **env,
            **FAST_LOOP,
            "RUNNER_ITERATION_COMMAND": f"{sys.executable} -m runner.one_job",
            "RUNNER_PYTHON": sys.executable,
            "RUNNER_WORKER_ID": name,
            "RUNNER_STATE_DIR": str(self.state_dir),
            "RUNNER_LOG_DIR": str(self.log_dir),
            "RUNNER_CREDENTIAL_FILES": str(self.dir / "no-credential"),
            "HOME": str(self.dir),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, **extra: str) -> "Worker":
        self.proc = subprocess.Popen(
            [str(SCRIPT)], cwd=REPO, env={**self.env, **extra}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "a"),
            start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def iteration_pids(self) -> list[int]:
        """The live `python -m runner.one_job` processes under this supervisor."""
        return [c for c in children(self.pid)
                if alive(c) and "runner.one_job" in cmdline(c)]

    def log(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def exit_codes(self) -> Counter:
        """Non-zero iteration exit codes, as the supervisor logged them."""
        return Counter(int(m.group(2)) for m in EXITED.finditer(self.log()))

    def iterations_started(self) -> int:
        try:
            return int(json.loads((self.state_dir / "state.json").read_text())["iteration"])
        except (OSError, ValueError, KeyError):
            return 0

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (as docker stop does), then make sure nothing of it is left."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.wait()


class Fleet:
    def __init__(self, root: Path, env: dict[str, str], n: int, prefix: str = "w") -> None:
        self.workers = [Worker(root, f"{prefix}{i}", env) for i in range(n)]

    def start(self, **extra: str) -> "Fleet":
        for w in self.workers:
            w.start(**extra)
        return self

    def stop(self) -> list[int | None]:
        for w in self.workers:  # ask all first, so they wind down in parallel
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        return [w.stop() for w in self.workers]

    def iteration_pids(self) -> list[int]:
        return [p for w in self.workers for p in w.iteration_pids()]

    def iterations_started(self) -> int:
        return sum(w.iterations_started() for w in self.workers)

    def exit_codes(self) -> Counter:
        total: Counter = Counter()
        for w in self.workers:
            total += w.exit_codes()
        return total

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log()[-3000:]}" for w in self.workers)


def job_counts(conn) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status").fetchall()
    return {r["status"]: r["n"] for r in rows}


def unfinished(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM jobs WHERE status IN "
                        "('queued', 'claimed', 'running')").fetchone()["n"]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
