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
from runner.errors import JobInputError
from runner.settings import Settings

MAX_COMMANDS = 20
TAIL_LINES = 20
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


def parse(config: dict[str, Any], settings: Settings) -> Plan:
    """Validate config.verify / verify_timeout_s before anything runs."""
    raw = config.get("verify")
    timeout = config.get("verify_timeout_s", settings.verify_timeout_seconds)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        raise JobInputError(f"config.verify_timeout_s must be whole seconds from 1 to 86400, "
                            f"got {str(timeout)[:40]!r}")
    if raw is None:
        return Plan([], timeout)
    if not isinstance(raw, list) or len(raw) > MAX_COMMANDS:
        raise JobInputError(f"config.verify must be a list of at most {MAX_COMMANDS} commands")
    commands = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            try:
                argv = shlex.split(item)
            except ValueError as exc:
                raise JobInputError(f"config.verify[{i}] cannot be split: {exc}") from None
        elif isinstance(item, list) and all(isinstance(a, str) for a in item):
            argv = list(item)
        else:
            raise JobInputError(f"config.verify[{i}] must be a string or a list of strings")
        if not argv or any("\0" in a for a in argv) or sum(map(len, argv)) > 10000:
            raise JobInputError(f"config.verify[{i}] is empty, too long or contains NUL")
        commands.append(argv)
    return Plan(commands, timeout)


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
        for line in proc.stdout:
            line = line.rstrip("\n")
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
    _kill(proc.pid)  # whatever it started must not outlive it
    proc.wait()
    reader.join(timeout=5)
    return code, list(tail), time.monotonic() - start, stop


def _kill(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
