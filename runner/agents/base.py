"""What every agent adapter provides: validation, a command line, and a stream reader."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.jobconfig import JobConfig
from runner.outcome import Outcome, Verdict
from runner.settings import Settings


@dataclass
class RunContext:
    """What the adapter may use to build the command: all of it the job's own."""

    job: dict[str, Any]
    config: JobConfig  # parsed and checked (runner/jobconfig.py) before anything ran
    settings: Settings
    workdir: Path
    job_dir: Path
    payload_path: Path
    prompt: str
    # The agent's own session of an earlier attempt to resume (runner.continuation).
    resume_session: str | None = None


@dataclass
class AgentCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclass
class RunOutput:
    exit_code: int | None
    stderr_tail: list[str] = field(default_factory=list)


class StreamReader:
    """Reads the agent's output line by line as it arrives.

    ``feed`` may raise ``EarlyStop`` when a line decides the outcome before the process
    ends; ``outcome`` is asked once the process has exited.
    """

    def feed(self, stream: str, line: str) -> None:  # noqa: B027 - optional hook
        pass

    def outcome(self, run: RunOutput) -> Outcome:
        return outcome_from_exit_code(run)

    def partial_result(self) -> dict[str, Any]:
        """What the stream told so far (usage, session …), for a run stopped before its end."""
        return {}

    def finished(self) -> bool:
        """True once the stream carried the run's final event (nothing left to stop)."""
        return False


class ReaderWrapper(StreamReader):
    """A reader around an agent's own that adds one concern (budget, progress) and hands
    everything else to it."""

    def __init__(self, inner: StreamReader) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # the agent's own reader's attributes
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def feed(self, stream: str, line: str) -> None:
        self.inner.feed(stream, line)

    def outcome(self, run: RunOutput) -> Outcome:
        return self.inner.outcome(run)

    def partial_result(self) -> dict[str, Any]:
        return self.inner.partial_result()

    def finished(self) -> bool:
        return self.inner.finished()


def outcome_from_exit_code(run: RunOutput) -> Outcome:
    """The fallback when an agent's output says nothing more useful."""
    if run.exit_code == 0:
        return Outcome(Verdict.SUCCEEDED, result={"exit_code": 0})
    tail = " | ".join(line.strip() for line in run.stderr_tail[-3:] if line.strip())
    reason = f"the agent exited with code {run.exit_code}"
    if tail:
        reason += f": {tail[:500]}"
    return Outcome(Verdict.RETRY, reason=reason, result={"exit_code": run.exit_code})


class Agent:
    name = "agent"

    def resumable(self, job_dir: Path, session_id: str | None) -> bool:
        """True when this agent can resume ``session_id`` from files on this host."""
        return False

    def adopt_session(self, from_job_dir: Path, job_dir: Path, workdir: Path,
                      session_id: str | None) -> bool:
        """Copy an earlier job's session ``session_id`` into this job's own files, for a job
        that continues it (config.continue_from); True when it can then be resumed."""
        return False

    def command(self, ctx: RunContext) -> AgentCommand:
        raise NotImplementedError

    def reader(self) -> StreamReader:
        return StreamReader()


# -- the agent's environment: an allowlist, never the runner's own secrets -------------

_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME",
                   "SHELL", "TERM")


def base_env(ctx: RunContext) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _PASSED_THROUGH or k.startswith("LC_")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    s = ctx.settings
    env.update({
        "GIT_AUTHOR_NAME": s.git_user_name, "GIT_AUTHOR_EMAIL": s.git_user_email,
        "GIT_COMMITTER_NAME": s.git_user_name, "GIT_COMMITTER_EMAIL": s.git_user_email,
        "GIT_TERMINAL_PROMPT": "0",
        "RUNNER_JOB_ID": str(ctx.job["id"]), "RUNNER_PAYLOAD": str(ctx.payload_path),
    })
    # config.env was checked when the config was parsed (no RUNNER_*, credentials, loader …).
    env.update(ctx.config.env or {})
    return env


def from_runner_env(env: dict[str, str], *names: str) -> dict[str, str]:
    """Copy the named variables, when set, from the runner's own environment into ``env``
    (an agent's credentials and endpoint: each adapter names exactly its own)."""
    for name in names:
        value = os.environ.get(name)
        if value:
            env[name] = value
    return env
