"""Helpers for testing bin/run-agent.sh as a real process with a fake iteration.

(A module of its own, not conftest.py, so that test files can import it by a name no
other conftest shares.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import waiting

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bin" / "run-agent.sh"
FAKE = Path(__file__).resolve().parent / "fake_iteration.py"

# Short timings so that the whole file runs in seconds.
FAST = {
    "RUNNER_BACKOFF_START": "0.05",
    "RUNNER_BACKOFF_MAX": "0.2",
    "RUNNER_MAX_CONSECUTIVE_FAILURES": "3",
    "RUNNER_TOKEN_CHECK_SECONDS": "0.1",
    "RUNNER_STATE_HEARTBEAT_SECONDS": "0.1",
}


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll until predicate() is truthy; return its value. For synchronisation only."""
    return waiting.wait_for(predicate, timeout, what, every=0.02)



def alive(pid: int) -> bool:
    """True if pid is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Supervisor:
    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.fake_dir = root / "fake"
        self.log_dir = root / "logs"
        self.state_dir = root / "state"
        self.stderr_path = root / "supervisor.stderr"
        self.proc: subprocess.Popen | None = None
        for d in (self.home, self.fake_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- set-up ---------------------------------------------------------------------
    def env(self, **overrides: str | None) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "FAKE_DIR": str(self.fake_dir),
            "RUNNER_ITERATION_COMMAND": f"{sys.executable} {FAKE}",
            # The supervisor's helper (runner.supervise) runs with the project's python.
            "RUNNER_PYTHON": sys.executable,
            "RUNNER_LOG_DIR": str(self.log_dir),
            "RUNNER_STATE_DIR": str(self.state_dir),
            **FAST,
        }
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def start(
        self, plan: list[dict] | None = None, wrapper: tuple[str, ...] = (), **env: str | None
    ) -> "Supervisor":
        """Start the supervisor (behind `wrapper`, e.g. unshare, if given)."""
        (self.fake_dir / "plan.json").write_text(json.dumps(plan or []))
        self.proc = subprocess.Popen(
            [*wrapper, str(SCRIPT)],
            cwd=self.root,
            env=self.env(**env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "w"),
            start_new_session=True,
        )
        return self

    def run_to_exit(self, timeout: float = 10, **env: str | None) -> int:
        """Start and wait for the supervisor to exit on its own (bad settings)."""
        self.start(**env)
        return self.proc.wait(timeout=timeout)

    # -- observation ----------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def calls(self) -> list[dict]:
        path = self.fake_dir / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def wait_calls(self, n: int, timeout: float = 10) -> list[dict]:
        return wait_for(lambda: len(self.calls()) >= n and self.calls(), timeout, f"{n} iteration(s)")

    def signals(self) -> list[dict]:
        path = self.fake_dir / "signals.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def wait_holding(self, n: int, timeout: float = 10) -> int:
        path = self.fake_dir / f"holding.{n}"
        wait_for(path.exists, timeout, f"iteration {n} to hold")
        return int(path.read_text())

    def log(self) -> str:
        return self.stderr_path.read_text()

    def log_lines(self, pattern: str) -> list[re.Match]:
        return [m for m in (re.search(pattern, line) for line in self.log().splitlines()) if m]

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 10) -> list[re.Match]:
        return wait_for(
            lambda: len(self.log_lines(pattern)) >= count and self.log_lines(pattern),
            timeout,
            f"{count} log line(s) matching {pattern!r}",
        )

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def wait_state(self, timeout: float = 10, **fields) -> dict:
        def match():
            try:
                st = self.state()
            except (FileNotFoundError, json.JSONDecodeError):
                return None
            return st if all(st.get(k) == v for k, v in fields.items()) else None

        return wait_for(match, timeout, f"state.json with {fields}")

    # -- ending ---------------------------------------------------------------------
    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
