"""The few settings a light command reads, without pydantic (``runner logs``).

``runner logs`` renders a file: importing pydantic-settings (and through it pydantic's
core) costs more memory than the rendering. It needs three settings, read here by the
rules ``Settings`` (runner/settings.py) applies to them: the names ``RUNNER_<FIELD>``
matched case-insensitively, an empty value counts as unset, ``DATABASE_URL`` before
``RUNNER_DATABASE_URL``, a secret may come from ``NAME_FILE``, ``RUNNER_LOG_DIR`` defaults
to ``logs`` and is made absolute. tests/test_lightsettings.py holds both readers to the
same answers. Nothing else is validated here: the light command reads nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from runner.errors import SettingsError


def libpq_dsn(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


# Secrets that may also come from a file named by NAME_FILE (the Docker secrets convention).
SECRET_FILE_SETTINGS = ("DATABASE_URL", "RUNNER_LISTEN_DATABASE_URL", "RUNNER_GIT_TOKEN",
                        "RUNNER_WEBHOOK_SECRET", "CLAUDE_CODE_OAUTH_TOKEN",
                        "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CODEX_API_KEY",
                        "GEMINI_API_KEY", "GOOGLE_API_KEY")


def load_secret_files(env: "os._Environ[str] | dict[str, str] | None" = None) -> None:
    """NAME_FILE → NAME, for each secret setting: the file's content, trailing newline
    stripped, into this process's environment only (the agent's and git's environments are
    built from allowlists, so the value reaches only what needs it). Errors name the
    setting and the path, never the content."""
    env = os.environ if env is None else env
    problems = []
    for name in SECRET_FILE_SETTINGS:
        path = env.get(f"{name}_FILE")
        if not path:
            continue
        if env.get(name):
            problems.append(f"{name}_FILE: {name} is set as well; set only one of them")
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable text"
            problems.append(f"{name}_FILE: cannot read {path}: {why}")
            continue
        if not value.strip():
            problems.append(f"{name}_FILE: the file {path} is empty")
            continue
        env[name] = value
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))


def env_value(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The value of ``name`` as pydantic-settings finds it (case-insensitive; empty = unset)."""
    env = os.environ if env is None else env
    wanted, found = name.lower(), None
    for key, value in env.items():
        if key.lower() == wanted:
            found = value
    return found or None


class Secret:
    """A string that does not show itself (``SecretStr``'s interface, without pydantic)."""

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"


class DatabaseUrl:
    """``has_database`` and ``dsn`` from a ``database_url`` secret (both settings classes)."""

    __slots__ = ()
    database_url: Any

    @property
    def has_database(self) -> bool:
        return bool(self.database_url.get_secret_value())

    @property
    def dsn(self) -> str:
        """The database URL in the form libpq understands (SQLAlchemy's prefix removed)."""
        return libpq_dsn(self.database_url.get_secret_value())


class LogSettings(DatabaseUrl):
    """What ``runner logs`` needs: where the logs are, and the database for a job's status.
    (A plain class: ``dataclasses`` would import ``inspect``, a tenth of the start-up.)"""

    __slots__ = ("log_dir", "database_url")

    def __init__(self, log_dir: Path, database_url: Secret) -> None:
        self.log_dir, self.database_url = log_dir, database_url

    def __repr__(self) -> str:
        return f"LogSettings(log_dir={str(self.log_dir)!r})"


def load_log_settings(env: Mapping[str, str] | None = None) -> LogSettings:
    if env is None:
        load_secret_files()
    url = env_value("DATABASE_URL", env) or env_value("RUNNER_DATABASE_URL", env) or ""
    log_dir = Path(env_value("RUNNER_LOG_DIR", env) or "logs").expanduser().resolve()
    return LogSettings(log_dir=log_dir, database_url=Secret(url))
