"""``config.verify``: commands run in the worktree after the agent succeeds; the job
succeeds only when every one exits 0.

Each command is a string (split with shlex, no shell) or a list of strings; each runs
in its own process group with ``config.verify_timeout_s`` (default
RUNNER_VERIFY_TIMEOUT_SECONDS), the agent's allowlisted environment minus anything that
looks like a credential, and its output goes line by line to the job's log.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.agent_user import AgentUser
from runner.jobconfig import JobConfig
from runner.procgroup import kill_group
from runner.settings import Settings

TAIL_LINES = 20
MAX_LINE_CHARS = 64 * 1024  # a longer line reaches the log in pieces of this size
_SECRETISH = re.compile(r"^(RUNNER_.*|DATABASE_URL|PG.*|ANTHROPIC_.*|CLAUDE_.*|OPENAI_.*|"
                        r"CODEX_.*|GEMINI_.*|GOOGLE_.*|.*(TOKEN|SECRET|PASSWORD|PASSWD|"
                        r"API_KEY|APIKEY|CREDENTIALS?).*)$", re.I)
_KEEP = {"RUNNER_JOB_ID"}


@dataclass
class Plan:
    commands: list[list[str]]
    timeout: int


@dataclass
class Report:
    ok: bool
    reason: str | None = None
    ran: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None  # shutdown / lease_lost / cancelled


def plan(config: JobConfig, settings: Settings) -> Plan:
    """The commands to run (checked with the rest of the config, runner/jobconfig.py)."""
    commands = [shlex.split(item) if isinstance(item, str) else list(item)
                for item in config.verify or []]
    return Plan(commands, config.verify_timeout_s or settings.verify_timeout_seconds)


def clean_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in _KEEP or not _SECRETISH.match(k)}


def run(plan: Plan, cwd: Path, env: dict[str, str], write_line: Callable[[str], None],
        should_stop: Callable[[], str | None] = lambda: None,
        agent: AgentUser | None = None) -> Report:
    """Each command in turn, in the work tree. With an agent of its own uid the commands
    run as that uid: they execute what the agent wrote (a test suite, package scripts),
    so they get no more than the agent had."""
    report = Report(ok=True)
    for argv in plan.commands:
        shown = shlex.join(argv)[:300]
        write_line(f"[verify] $ {shown}")
        spawned = agent.command(argv) if agent is not None and agent.isolated else argv
        code, tail, seconds, stop = _run_one(spawned, cwd, clean_env(env), plan.timeout,
                                             write_line, should_stop)
        report.ran.append({"command": shown, "exit_code": code, "seconds": round(seconds, 2)})
        if stop is not None:
            return Report(False, f"verify stopped: {stop}", report.ran, stopped=stop)
        if code != 0:
            why = (f"timed out after {plan.timeout} s" if code is None
                   else f"exited with code {code}")
            text = "\n".join(tail)[-2000:]
            return Report(False, f"verify command `{shown}` {why}; output tail:\n{text}", report.ran)
    return report


def _run_one(argv: list[str], cwd: Path, env: dict[str, str], timeout: int,
             write_line: Callable[[str], None], should_stop: Callable[[], str | None]):
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=os.path.realpath(cwd), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", start_new_session=True)
    except OSError as exc:
        tail.append(f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        return 127, list(tail), 0.0, None

    def pump() -> None:
        assert proc.stdout is not None
        # Read in bounded pieces: a command printing one endless line costs no memory.
        while chunk := proc.stdout.readline(MAX_LINE_CHARS):
            line = chunk.rstrip("\n")
            tail.append(line)
            write_line(f"[verify] {line}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = start + timeout
    code: int | None = None
    stop = None
    while True:
        code = proc.poll()
        if code is not None:
            break
        stop = should_stop()
        if stop is not None or time.monotonic() >= deadline:
            code = None
            break
        time.sleep(0.05)
    kill_group(proc.pid, signal.SIGKILL)  # whatever it started must not outlive it
    proc.wait()
    reader.join(timeout=5)
    return code, list(tail), time.monotonic() - start, stop
