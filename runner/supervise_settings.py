"""The supervisor's settings (bin/run-agent.sh through runner.supervise), validated at start.

Empty counts as unset, as in the iteration's settings (docker-compose's ``VAR=`` means
"the default"); numbers are parsed by the same types (runner/envtypes.py). A bad value
stops the supervisor with ``bad setting NAME='value': expected …; exiting``.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runner.envtypes import Count, Days, Hours, PositiveSeconds
from runner.errors import SettingsError


def _default_credential_files() -> str:
    home = os.environ.get("HOME")
    return f"{home}/.claude/.credentials.json" if home else ""


class SupervisorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNNER_", extra="ignore", frozen=True,
                                      env_ignore_empty=True)

    iteration_command: str = "python -m runner.one_job"
    backoff_start: PositiveSeconds = 5
    backoff_max: PositiveSeconds = 300
    max_consecutive_failures: Count = 5
    token_check_seconds: PositiveSeconds = 60
    usage_limit_max_sleep: PositiveSeconds = 21600
    state_heartbeat_seconds: PositiveSeconds = 30
    log_gzip_after_hours: Hours = 24
    log_delete_after_days: Days = 14
    # Where the agent's credential lives (colon-separated): a change lifts TOKEN_EXPIRED.
    credential_files: str = Field(default_factory=_default_credential_files)
    log_dir: Path = Path("logs")
    state_dir: Path = Path("state")
    worker_id: str | None = None

    @field_validator("iteration_command")
    @classmethod
    def _runnable(cls, value: str) -> str:
        words = value.split()
        if not words:
            raise ValueError("expected a command")
        if shutil.which(words[0]) is None:
            raise ValueError(f"expected a command whose first word is an executable "
                             f"({words[0]!r} was not found)")
        return value

    @field_validator("log_dir", "state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else Path.cwd() / value

    @model_validator(mode="after")
    def _start_within_max(self) -> "SupervisorSettings":
        if self.backoff_start > self.backoff_max:
            raise ValueError(f"RUNNER_BACKOFF_START: expected at most RUNNER_BACKOFF_MAX "
                             f"({self.backoff_max:g})")
        return self

    @property
    def command(self) -> list[str]:
        """The iteration's argv: words split on blanks (no quoting, no globbing)."""
        return self.iteration_command.split()

    @property
    def credential_paths(self) -> list[Path]:
        return [Path(p) for p in self.credential_files.split(":") if p]

    def effective_worker_id(self, supervisor_pid: int) -> str:
        return self.worker_id or f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{supervisor_pid}"


def load_supervisor_settings() -> SupervisorSettings:
    """Read and validate, or raise SettingsError with one ``bad setting …`` sentence."""
    try:
        return SupervisorSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            name = "RUNNER_" + str(error["loc"][0]).upper()
            shown = os.environ.get(name, "")
        else:  # a check across settings names its setting itself
            name, _, message = message.partition(": ")
            shown = os.environ.get(name, "")
        message = message.removeprefix("expected ")
        raise SettingsError(f"bad setting {name}='{shown}': expected {message}; exiting") from None
