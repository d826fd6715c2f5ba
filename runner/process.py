"""Run the agent in its own process group, stream its output, and stop it cleanly.

The agent (and anything it starts: shells, MCP servers) lives in a fresh session, so
one ``os.killpg`` reaches all of it. After the agent exits the group is killed anyway:
a grandchild that outlives its parent must not outlive the iteration.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from runner.agents.base import AgentCommand, RunOutput, StreamReader
from runner.errors import AgentNotFound
from runner.outcome import EarlyStop, Outcome

_EOF = object()


@dataclass
class ProcessResult:
    exit_code: int | None
    stop_reason: str | None = None          # why we stopped it, if we did
    early: Outcome | None = None            # what the stream told us before the end
    stderr_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def output(self) -> RunOutput:
        return RunOutput(self.exit_code, self.stderr_tail)


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when nothing is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_alive(pgid: int) -> bool:
    return kill_group(pgid, 0)


def terminate_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the group, a grace period, then SIGKILL to whatever is left."""
    pgid = proc.pid
    kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not group_alive(pgid):
            return
        time.sleep(0.05)
    kill_group(pgid, signal.SIGKILL)


def run_agent(
    command: AgentCommand, *, reader: StreamReader, emit: Callable[[str, str], None],
    should_stop: Callable[[], str | None], grace_seconds: float,
    on_spawn: Callable[[int], None] | None = None,
) -> ProcessResult:
    """Spawn, stream every line to ``emit`` and ``reader``, and stop when asked.

    ``should_stop`` is polled a few times a second; a non-None answer is the reason the
    group is terminated. A reader's ``EarlyStop`` terminates it too.
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            command.argv, cwd=command.cwd, env=command.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise AgentNotFound(f"the agent's program {command.argv[0]!r} was not found "
                            f"(check the RUNNER_*_BIN settings and PATH)") from exc
    except PermissionError as exc:
        raise AgentNotFound(f"the agent's program {command.argv[0]!r} is not executable") from exc
    if on_spawn is not None:
        on_spawn(proc.pid)  # the group id: start_new_session makes the agent its leader

    lines: queue.Queue[tuple[str, object]] = queue.Queue()
    threads = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", lines), daemon=True),
    ]
    for t in threads:
        t.start()

    stderr_tail: deque[str] = deque(maxlen=20)
    stop_reason: str | None = None
    early: Outcome | None = None

    def handle(stream: str, line: str) -> None:
        nonlocal early, stop_reason
        emit(stream, line)
        if stream == "stderr":
            stderr_tail.append(line)
        if early is not None or stop_reason is not None:
            return
        try:
            reader.feed(stream, line)
        except EarlyStop as stop:
            early, stop_reason = stop.outcome, stop.outcome.verdict.value
            terminate_group(proc, grace_seconds)

    open_streams = 2
    try:
        while open_streams:
            try:
                stream, item = lines.get(timeout=0.1)
            except queue.Empty:
                stream, item = "", None
            if item is _EOF:
                open_streams -= 1
            elif isinstance(item, str):
                handle(stream, item)
            if stop_reason is None:
                stop_reason = should_stop()
                if stop_reason is not None:
                    terminate_group(proc, grace_seconds)
            if open_streams and proc.poll() is not None and lines.empty():
                # The agent is gone but something it started holds the pipes open: that
                # something must not outlive it. Killing the group closes the pipes.
                kill_group(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            terminate_group(proc, grace_seconds)
        exit_code = proc.wait()
        kill_group(proc.pid, signal.SIGKILL)  # nothing of the agent outlives the iteration
        for t in threads:
            t.join(timeout=2)
        while not lines.empty():
            stream, item = lines.get_nowait()
            if isinstance(item, str):
                handle(stream, item)
    return ProcessResult(exit_code, stop_reason, early, list(stderr_tail),
                         time.monotonic() - started)


def _pump(pipe, name: str, out: queue.Queue[tuple[str, object]]) -> None:
    try:
        for raw in iter(pipe.readline, b""):
            out.put((name, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
    finally:
        pipe.close()
        out.put((name, _EOF))


def group_members(pgid: int, marker: str) -> list[int]:
    """Live processes in group ``pgid`` whose environment holds ``marker`` (NAME=value).

    The marker proves the group is still the one we started (group ids are reused).
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid:  # field 5 of stat: pgrp
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker.encode() in fh.read().split(b"\0"):
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found
