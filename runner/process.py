"""Run the agent, follow its output, and stop it — and everything it started — cleanly.

The agent starts in a session of its own (one ``killpg`` reaches the CLI and its direct
children) under the agent's user (``settings.agent``). Its stdout and stderr go to files
in the job directory, followed as they grow (runner/agent_output.py): nothing is lost
when the CLI exits before we have read it all, and memory stays bounded whatever it
prints. Stopping it means SIGTERM to its group, a grace, then SIGKILL to every process
of the attempt wherever it went (runner/procgroup.py): Claude Code's tools run in
sessions of their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner.agent_output import Follower
from runner.filewatch import FileWatch, close_in_background
from runner.agent_user import AgentUser
from runner.agents.base import AgentCommand, RunOutput, StreamReader
from runner.errors import AgentNotFound
from runner.outcome import EarlyStop, Outcome, StopReason
from runner.procgroup import group_members, kill_attempt, kill_group, terminate  # noqa: F401
from runner.staging import take as take_staged
from runner.wakeup import Wakeup, pidfd, readable
from runner.workspace import STDERR_FILE, STDOUT_FILE  # noqa: F401 - for callers

# The longest the loop waits: output (inotify on the two files), the agent's exit (its
# pidfd) and a stop asked by the heartbeat (``wakeup``) end the wait at once; where one
# of them is not available the poll finds it.
_POLL_SECONDS = 0.05


@dataclass
class ProcessResult:
    exit_code: int | None
    stop_reason: str | None = None          # why we stopped it, if we did
    early: Outcome | None = None            # what the stream told us before the end
    stderr_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def output(self) -> RunOutput:
        return RunOutput(self.exit_code, self.stderr_tail)


def run_agent(
    command: AgentCommand, *, reader: StreamReader, emit: Callable[[str, str], None],
    should_stop: Callable[[], str | None], grace_seconds: float,
    on_spawn: Callable[[int], None] | None = None, output_dir: Path | None = None,
    agent: AgentUser | None = None, wakeup: Wakeup | None = None,
) -> ProcessResult:
    """Spawn, hand every line to ``emit`` and ``reader`` in order, and stop when asked.

    ``should_stop`` is asked at every turn of the loop (at least 20 times a second, and at
    once when ``wakeup`` is woken); a non-None answer is the reason the attempt is
    terminated. A reader's ``EarlyStop`` terminates it too. ``output_dir`` holds the
    output files (the job directory; default: the command's cwd's parent).
    """
    started = time.monotonic()
    job_id = command.env.get("RUNNER_JOB_ID", "")
    out_dir = Path(output_dir) if output_dir is not None else Path(command.cwd).parent
    out_path, err_path = out_dir / STDOUT_FILE, out_dir / STDERR_FILE
    env = command.env
    if agent is not None and agent.isolated:
        env = {**env, "HOME": str(agent_home(out_dir, agent))}
    for path in (out_path, err_path):
        take_staged(path)  # made while the worker waited (runner/staging.py): opened, not created
    with open(out_path, "wb") as out_fh, open(err_path, "wb") as err_fh:
        try:
            proc = subprocess.Popen(
                _as_agent(command.argv, env, agent), cwd=command.cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=out_fh, stderr=err_fh, start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise AgentNotFound(f"the agent's program {command.argv[0]!r} was not found "
                                f"(check the RUNNER_*_BIN settings and PATH)") from exc
        except PermissionError as exc:
            raise AgentNotFound(f"the agent's program {command.argv[0]!r} is not executable") from exc
    exited_fd = pidfd(proc.pid)  # before anything can reap it: the pid is still ours
    if on_spawn is not None:
        on_spawn(proc.pid)  # the group id: start_new_session makes the agent its leader

    followers = [Follower(out_path, "stdout"), Follower(err_path, "stderr")]
    watches = [w for w in (FileWatch(out_path), FileWatch(err_path)) if not w.polling]
    stderr_tail: deque[str] = deque(maxlen=20)
    stop_reason: str | None = None
    early: Outcome | None = None

    def stop_attempt() -> None:
        terminate(proc.pid, grace_seconds, job_id, agent, exited=lambda: proc.poll() is not None,
                  exited_fd=exited_fd)

    def handle(stream: str, line: str) -> None:
        nonlocal early, stop_reason
        emit(stream, line)
        if stream == "stderr":
            stderr_tail.append(line[:4096])
        if early is not None or stop_reason is not None:
            return
        try:
            reader.feed(stream, line)
        except EarlyStop as stop:
            early, stop_reason = stop.outcome, StopReason.EARLY
            stop_attempt()

    try:
        while proc.poll() is None:
            got = False
            for f in followers:
                for line in f.read():
                    got = True
                    handle(f.stream, line)
            if stop_reason is None:
                stop_reason = should_stop()
                if stop_reason is not None:
                    stop_attempt()
            if not got:
                woken = wakeup.fileno() if wakeup is not None else None
                ready = readable([exited_fd, woken, *(w.fd for w in watches)], _POLL_SECONDS)
                if woken in ready:
                    wakeup.clear()  # type: ignore[union-attr] - woken is not None here
                for w in watches:
                    if w.fd in ready:
                        w.drain()
    finally:
        if proc.poll() is None:
            stop_attempt()
        exit_code = proc.wait()
        # Nothing of the attempt outlives the agent: a grandchild still writing would
        # keep the files growing, and its work would land after the job was recorded.
        kill_group(proc.pid, 9)
        kill_attempt(job_id, agent)
        for f in followers:  # the writers are gone: read to the end, in order per stream
            for line in f.drain():
                handle(f.stream, line)
        if exited_fd is not None:
            os.close(exited_fd)
        close_in_background(watches)
        if agent is not None and agent.isolated and stop_reason != "lease_lost":
            reclaim_home(out_dir)  # not after a lost claim: the home may be the new owner's
    return ProcessResult(exit_code, stop_reason, early, list(stderr_tail),
                         time.monotonic() - started)


def agent_home(job_dir: Path, agent: AgentUser) -> Path:
    """A HOME of the agent's own inside its job directory (the CLI keeps its config and
    session files there), owned by the agent's uid. The job directory itself becomes
    traversable (not listable) so the agent can reach its HOME and work tree by name.
    (Handing the whole job directory to the agent's uid is the workspace's part.)"""
    home = job_dir / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    hand_tree(home, agent.uid, agent.gid)
    os.chmod(job_dir, os.stat(job_dir).st_mode & 0o7777 | 0o111)
    return home


def hand_tree(path: Path, uid: int, gid: int) -> None:
    """Give ``path`` and everything under it to ``uid:gid`` (CAP_CHOWN), owner first so a
    directory the agent closed to others (0700) can then be listed; links are not followed."""
    try:
        os.lchown(path, uid, gid)
        if path.is_symlink() or not path.is_dir():
            return
        for entry in os.scandir(path):
            hand_tree(Path(entry.path), uid, gid)
    except OSError:
        pass


def reclaim_home(job_dir: Path) -> None:
    """Take the agent's HOME back, so the runner can keep or remove it."""
    home = job_dir / "home"
    if home.exists():
        hand_tree(home, os.geteuid(), os.getegid())


def _as_agent(argv: list[str], env: dict[str, str], agent: AgentUser | None) -> list[str]:
    """The argv that starts the agent as its own user (runner/agent_user.py). The program
    is looked up first: behind setpriv a missing one would only be setpriv's exit 127."""
    if agent is None or not agent.isolated:
        return argv
    program = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if program is None:
        raise AgentNotFound(f"the agent's program {argv[0]!r} was not found "
                            f"(check the RUNNER_*_BIN settings and PATH)")
    return agent.command([program, *argv[1:]])
