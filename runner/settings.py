"""Settings from the environment (``RUNNER_*`` plus ``DATABASE_URL``), validated at start.

A bad value stops the process with the setting's name and what was expected: an
operator who typed ``RUNNER_LEASE_SECONDS=5m`` reads exactly that, not a traceback.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from runner import pooler
from runner.envtypes import Days, Hours, PositiveSeconds, Seconds
from runner.errors import SettingsError
# The parts a light command (`runner logs`, runner/lightsettings.py) needs without pydantic.
from runner.lightsettings import (  # noqa: F401
    SECRET_FILE_SETTINGS, DatabaseUrl, libpq_dsn, load_secret_files,
)
# The job config's vocabulary (runner/jobconfig.py), which the allowlists draw from.
from runner.jobconfig import AGENTS, PERMISSION_MODES  # noqa: F401

if TYPE_CHECKING:
    from runner.agent_user import AgentUser

CommaList = Annotated[list[str], NoDecode]


def _default_worker_id() -> str:
    # The supervisor exports a stable RUNNER_WORKER_ID; a bare iteration gets a unique one.
    return f"{socket.gethostname()}-{os.getpid()}"


def _packaged_rules() -> Path | None:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_agent_rules" / "CLAUDE.md", here.parent / "CLAUDE.md"):
        if candidate.is_file():
            return candidate
    return None


class Settings(DatabaseUrl, BaseSettings):
    # Empty counts as unset: docker-compose's `VAR=` means "the default" (as for the supervisor).
    model_config = SettingsConfigDict(env_prefix="RUNNER_", extra="ignore", frozen=True,
                                      env_ignore_empty=True)

    database_url: SecretStr = Field(
        validation_alias=AliasChoices("DATABASE_URL", "RUNNER_DATABASE_URL"),
        description="PostgreSQL URL, e.g. postgresql://user:pass@host:5432/db",
    )
    # A direct (not pooled) URL for LISTEN, when DATABASE_URL goes through a pooler.
    listen_database_url: SecretStr | None = None
    # auto: a transaction-mode pooler is assumed on port 6432 or a host named *pooler* /
    # *pgbouncer*; transaction: no prepared statements, LISTEN only on the direct URL.
    database_pooler: Literal["auto", "none", "transaction", "session"] = "auto"
    worker_id: str = Field(default_factory=_default_worker_id, min_length=1, max_length=200)
    queues: CommaList = Field(default_factory=lambda: ["default"], min_length=1)

    lease_seconds: int = Field(default=300, ge=2, le=86400)
    # An idle iteration waits this long, then exits and the next one starts (sweep,
    # reconcile). Each start costs ~0.6 s of CPU, so an idle worker restarts hourly, not
    # every few minutes (benchmarks/idle_worker.py).
    wait_seconds: Seconds = Field(default=3600, le=86400)
    poll_seconds: PositiveSeconds = Field(default=5, le=3600)
    job_timeout_seconds: int = Field(default=3600, ge=1)
    kill_grace_seconds: Seconds = Field(default=10, le=600)
    retry_backoff_seconds: Seconds = Field(default=60, le=30 * 86400)
    retry_backoff_max_seconds: Seconds = Field(default=3600, le=30 * 86400)
    # Finished jobs older than this are deleted (0 keeps them for ever).
    prune_after_days: Days = Field(default=30, le=100 * 365)

    job_root: Path = Path("data/jobs")
    cache_dir: Path = Path("data/cache")
    log_dir: Path = Path("logs")
    state_dir: Path = Path("state")
    log_format: Literal["auto", "json", "console"] = "auto"
    # How commands show times to a person (runner/clock.py): UTC with Z, or local + offset.
    time_zone: Literal["utc", "local"] = "utc"

    default_agent: Literal["claude", "codex", "gemini", "stub", "command"] = "claude"
    allowed_agents: CommaList = Field(default_factory=lambda: list(AGENTS))
    allowed_permission_modes: CommaList = Field(
        default_factory=lambda: ["default", "acceptEdits", "plan"]
    )
    agent_command: str | None = None
    claude_bin: str = "claude"
    codex_bin: str = "codex"
    gemini_bin: str = "gemini"
    agent_rules_file: Path | None = Field(default_factory=_packaged_rules)
    # Which Claude credential the agent gets when several are set: auto = the OAuth token
    # first (in -p mode the API key would silently win over it), then the API key.
    claude_credential: Literal["auto", "oauth", "api_key"] = "auto"
    # CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 for the agent (telemetry, title calls …).
    claude_disable_nonessential_traffic: bool = True
    # The agent's own uid (runner/agent_user.py): a user name, uid or uid:gid; unset = the
    # runner's uid. With require_agent_isolation the runner refuses to share its uid.
    agent_user: str | None = None
    require_agent_isolation: bool = False
    # Where named MCP configs live: config.mcp_config "x.json" means <dir>/x.json.
    mcp_config_dir: Path | None = None

    allowed_repo_hosts: CommaList = Field(
        default_factory=lambda: ["github.com", "gitlab.com", "bitbucket.org"]
    )
    allow_file_repos: bool = False
    git_user_name: str = "runner"
    git_user_email: str = "runner@localhost"
    git_token: SecretStr | None = None
    # Only https to these hosts gets the token (empty: RUNNER_ALLOWED_REPO_HOSTS): "host" on
    # any port, "host:port", "*.example.com" for any name under it (runner/gitcred.py).
    git_token_hosts: CommaList = Field(default_factory=list)
    git_username: str = Field(default="x-access-token", pattern=r"^[A-Za-z0-9._@+-]{1,100}$")

    # Operations (docs/operations.md): the health server and the quota gate.
    health_port: int = Field(default=8080, ge=0, le=65535)
    health_bind: str = "0.0.0.0"
    health_stale_seconds: PositiveSeconds = 120
    quota_probe: str | None = None
    quota_probe_timeout_seconds: PositiveSeconds = Field(default=30, le=600)
    min_quota_pct: float = Field(default=10, ge=0, le=100)
    quota_max_wait_seconds: Seconds = Field(default=3600, le=7 * 86400)
    # A usage-limit reset the agent's output names is believed only this far ahead.
    max_usage_wait_seconds: PositiveSeconds = Field(default=6 * 3600, le=7 * 86400)
    # The queue protects itself (runner/guard.py): this many runs of one agent on one queue
    # ending with the model API overloaded (HTTP 429/529/5xx) within the window pause that
    # agent on that queue for every worker; each pause in a row without a success doubles,
    # from the first up to the max.
    overload_threshold: int = Field(default=3, ge=1, le=1000)
    overload_window_seconds: PositiveSeconds = Field(default=300, le=86400)
    overload_pause_seconds: PositiveSeconds = Field(default=60, le=86400)
    overload_pause_max_seconds: PositiveSeconds = Field(default=1800, le=7 * 86400)
    # A job handed back this often for overloads has its later attempts counted.
    overload_refund_limit: int = Field(default=10, ge=0, le=10_000)
    # CLAUDE_CODE_MAX_RETRIES for the agent: how often the CLI itself retries an overloaded
    # API before it gives up (its own default, 10, takes minutes). Unset: the CLI's default.
    claude_max_retries: int | None = Field(default=4, ge=0, le=100)
    # The most one job may spend, in dollars (runner/budget.py): caps config.max_budget_usd
    # and is the budget of a job that names none. Unset: no ceiling.
    max_budget_usd: float | None = Field(default=None, gt=0, le=10_000)
    # A POST on every final status and question (runner/webhook.py), signed with the secret.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = Field(default=None, validate_default=True)
    webhook_timeout_seconds: PositiveSeconds = Field(default=5, le=60)

    @field_validator("queues", "allowed_agents", "allowed_permission_modes",
                     "allowed_repo_hosts", "git_token_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_agents")
    @classmethod
    def _known_agents(cls, value: list[str]) -> list[str]:
        return _only_known(value, AGENTS, "agent")

    @field_validator("allowed_permission_modes")
    @classmethod
    def _known_modes(cls, value: list[str]) -> list[str]:
        return _only_known(value, PERMISSION_MODES, "mode")

    @field_validator("job_root", "cache_dir", "log_dir", "state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("quota_probe")
    @classmethod
    def _probe_command(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "0", "false", "no", "off"):
            return None
        if value.strip().lower() in ("1", "true", "yes", "on"):
            raise ValueError("must be a command that prints {\"pct\": …, \"reset_at\": …}, not a switch")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.strip()

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_signed(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        if info.data.get("webhook_url") and (value is None or not value.get_secret_value()):
            raise ValueError("required when RUNNER_WEBHOOK_URL is set: every delivery is "
                             "signed, so set a secret the web app knows")
        return value

    @property
    def agent(self) -> "AgentUser":
        """The user the agent runs as (runner/agent_user.py)."""
        from runner.agent_user import resolve

        return resolve(self.agent_user)

    @property
    def listen_dsn(self) -> str | None:
        """Where to LISTEN: the direct URL when given, else the database URL — unless that
        goes through a transaction-mode pooler, where a NOTIFY never arrives (None: poll)."""
        if self.listen_database_url is not None and self.listen_database_url.get_secret_value():
            return libpq_dsn(self.listen_database_url.get_secret_value())
        return None if pooler.transaction_mode(self.dsn, self.database_pooler) else self.dsn

    # -- git: cache, worktrees, push, verify (docs/git.md) --------------------------
    allow_http_loopback: bool = False  # plain http:// only to 127.0.0.1/::1/localhost (tests)
    git_timeout_seconds: PositiveSeconds = 1800
    git_lock_timeout_seconds: PositiveSeconds = 3600
    git_retry_attempts: int = Field(default=3, ge=1, le=10)
    git_retry_wait_seconds: Seconds = Field(default=2, le=300)
    keep_failed_hours: Hours = 24
    # A blocked job's question unanswered this long is listed as expired (it stays blocked
    # and can still be answered); its directory (the session to resume) is kept as long.
    blocked_expire_hours: Hours = 72
    keep_branch_hours: Hours = 168
    # Checkouts of a mirror's origin/HEAD made after a job for the next one (runner/spare.py):
    # how many per repository are kept ready; 0 turns them off. Never for an isolated agent.
    spare_worktrees: int = Field(default=1, ge=0, le=16)
    # Leftovers (runner/leftovers.py): files bigger than this are listed, not committed.
    leftover_max_file_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    # The runner's own identity on the commit of changes the agent left uncommitted.
    leftover_author_name: str = "runner"
    leftover_author_email: str = "runner-leftovers@localhost"
    verify_timeout_seconds: int = Field(default=600, ge=1, le=86400)

    # -- enqueue guarantees (docs/enqueue.md) ----------------------------------------
    # JSON {"<concurrency key>": limit, …}: how many jobs of that key may be active at
    # once, over the job's own concurrency_limit (default 1). Every worker should agree.
    concurrency_limits: dict[str, Annotated[int, Field(ge=1, le=10000)]] = Field(default_factory=dict)


def _only_known(value: list[str], known: tuple[str, ...], what: str) -> list[str]:
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; known: {', '.join(known)}")
    return value


def _env_name(field: str) -> str:
    # Errors name the field, or for aliased fields the alias that was looked up.
    if field.lower() in ("database_url", "runner_database_url"):
        return "DATABASE_URL"
    return field if field.startswith("RUNNER_") else "RUNNER_" + field.upper()


_SECRET_FIELDS = {"DATABASE_URL", "RUNNER_GIT_TOKEN", "RUNNER_LISTEN_DATABASE_URL", "RUNNER_WEBHOOK_SECRET",
                  "RUNNER_WEBHOOK_URL"}

def load_settings(*, database_optional: bool = False, **overrides: Any) -> Settings:
    """Read and validate the settings, or raise SettingsError naming each bad setting.

    ``database_optional``: for commands that read files only (``runner health``), a
    missing DATABASE_URL is an empty one (``Settings.has_database`` is False).
    """
    load_secret_files()
    if database_optional and not (os.environ.get("DATABASE_URL") or os.environ.get("RUNNER_DATABASE_URL")):
        overrides.setdefault("database_url", "")
    try:
        settings = Settings(**overrides)
        settings.agent  # noqa: B018 - RUNNER_AGENT_USER is checked at start like the rest
        return settings
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            name = _env_name(field)
            if error["type"] == "missing":
                lines.append(f"{name}: required but not set")
                continue
            shown = "" if name in _SECRET_FIELDS else f" (got {error.get('input')!r})"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{name}: {message}{shown}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
