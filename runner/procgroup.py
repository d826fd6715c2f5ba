"""Process groups and attempts: one place to signal a group and to kill everything an
agent's attempt left behind.

A process group is not enough to find an attempt: Claude Code runs each Bash tool
command in a session of its own. What the agent cannot shed is its uid (when it runs as
a user of its own, ``settings.agent.isolated``) — then every process of that uid is the
attempt's, since one worker runs one agent at a time. Without a uid of its own the
attempt is found by the ``RUNNER_JOB_ID=<id>`` marker every process of it inherits in
its environment (readable to us: same uid).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

from runner.agent_user import AgentUser
from runner.wakeup import readable


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when nothing (of ours) is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` still runs. A zombie does not count: a
    tool's child orphaned by the CLI's exit is reparented to PID 1, which (outside a
    container with an init that reaps) may leave it unreaped for ever — waiting for it
    would turn every stop into the whole kill grace."""
    if not kill_group(pgid, 0):
        return False
    return any(_pgrp(p) == pgid and not _zombie(p) for p in _pids())


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # gone while we looked


def _pids() -> Iterable[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _status_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])  # the real uid: what setuid gave it
    except (OSError, IndexError, ValueError):
        return None
    return None


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def _pgrp(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[2])  # field 5 of stat: pgrp
    except (OSError, IndexError, ValueError):
        return None


def group_members(pgid: int, marker: str) -> list[int]:
    """Live processes in group ``pgid`` whose environment holds ``marker`` (NAME=value)."""
    raw = marker.encode()
    return [p for p in _pids() if _pgrp(p) == pgid and _has_marker(p, raw)]


def attempt_processes(job_id: str, agent: AgentUser | None) -> list[int]:
    """Every live process of the agent's attempt at ``job_id`` (never this process)."""
    me = os.getpid()
    if agent is not None and agent.isolated:
        return [p for p in _pids() if p != me and _status_uid(p) == agent.uid]
    if not job_id:
        return []
    marker = f"RUNNER_JOB_ID={job_id}".encode()
    return [p for p in _pids() if p != me and _has_marker(p, marker)]


def kill_attempt(job_id: str, agent: AgentUser | None, rounds: int = 20) -> int:
    """SIGKILL every process of the attempt, again until none is left (a process may fork
    between the scan and the kill). Returns how many were killed."""
    killed = 0
    for _ in range(rounds):
        found = attempt_processes(job_id, agent)
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)
    return killed


def terminate(pid: int, grace: float, job_id: str, agent: AgentUser | None,
              exited=None, exited_fd: int | None = None) -> None:
    """SIGTERM the agent's group first (the CLI ends its own tools), wait up to ``grace``
    for it to go, then SIGKILL whatever remains of the attempt, in any session.
    ``exited_fd``: the leader's pidfd, so its exit ends the wait at once (the rest of its
    group, rarely still there then, is looked for every 50 ms)."""
    kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        leader_gone = exited is None or exited()
        if leader_gone and not group_alive(pid):
            break
        # the leader's exit ends the wait; with no leader left to wait for, a plain sleep
        readable([None if leader_gone else exited_fd],
                 min(0.05, max(deadline - time.monotonic(), 0.0)))
    kill_group(pid, signal.SIGKILL)
    kill_attempt(job_id, agent)
