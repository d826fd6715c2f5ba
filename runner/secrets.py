"""The runner's secrets in one place: their names, and the one redactor for logs and rows.

Everything the runner writes — log lines, ``jobs.result``/``error``, ``job_events.detail``,
``workers``, state files — passes :func:`safe_text` / :func:`safe_json` first:

* made storable: NUL removed (PostgreSQL ``text``/``jsonb`` refuse it), lone surrogates and
  the escapes of invalid UTF-8 replaced by U+FFFD (``jsonb`` and UTF-8 refuse them);
* redacted: the values of the runner's own secrets (database password, push token, every
  agent credential it holds), and common token shapes whoever they belong to;
* capped where a caller asks (``cap``), with a note of how much was cut.

The agent's output is under the agent's control, and an agent may be steered by whatever it
read; nothing it prints is trusted to be free of secrets.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.settings import Settings

REDACTED = "***"
MIN_SECRET_LEN = 6  # shorter values would redact ordinary words
TEXT_CAP = 64 * 1024  # summary, error and every other string stored in a row

# Environment variables whose values are secrets the runner may hold. The database URL's
# password is taken out of the URL as well (see secret_values).
SECRET_ENV_NAMES = (
    "DATABASE_URL", "RUNNER_DATABASE_URL", "RUNNER_LISTEN_DATABASE_URL", "RUNNER_GIT_TOKEN",
    "RUNNER_WEBHOOK_SECRET",
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
    "OPENAI_API_KEY", "CODEX_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
)

# The runner's own secrets, which no child process gets (the agent's credentials go to
# the agent and to a quota probe; these never do).
RUNNER_OWN_SECRET_NAMES = ("DATABASE_URL", "RUNNER_DATABASE_URL", "RUNNER_LISTEN_DATABASE_URL",
                           "RUNNER_GIT_TOKEN", "RUNNER_WEBHOOK_SECRET", "RUNNER_WEBHOOK_URL")

# Token shapes redacted wherever they appear, whether or not the runner holds them.
_SHAPES = [
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), REDACTED),
    (re.compile(r"\bglpat-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), REDACTED),
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{8,}", re.I), r"\1 " + REDACTED),
    # scheme://user:password@host — the password part.
    (re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s\"']*):[^@/\s\"']+@"), r"\1:" + REDACTED + "@"),
]

_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def secret_values(settings: "Settings | None" = None, env: dict[str, str] | None = None) -> list[str]:
    """The values of every secret the runner holds (settings first, then the environment)."""
    env = os.environ if env is None else env
    values: list[str] = [env.get(name, "") for name in SECRET_ENV_NAMES]
    urls = [env.get("DATABASE_URL", ""), env.get("RUNNER_DATABASE_URL", ""),
            env.get("RUNNER_LISTEN_DATABASE_URL", "")]
    if settings is not None:
        urls.append(settings.database_url.get_secret_value())
        values.append(urls[-1])
        if settings.listen_database_url is not None:
            urls.append(settings.listen_database_url.get_secret_value())
            values.append(urls[-1])
        if settings.git_token is not None:
            values.append(settings.git_token.get_secret_value())
        if getattr(settings, "webhook_secret", None) is not None:
            values.append(settings.webhook_secret.get_secret_value())
        for key in ("anthropic_api_key", "claude_code_oauth_token", "openai_api_key",
                    "codex_api_key", "gemini_api_key", "google_api_key"):
            value = getattr(settings, key, None)
            if value is not None:
                values.append(value.get_secret_value())
    for url in urls:
        values.extend(_url_passwords(url))
    return [v for v in values if v]


def _url_passwords(url: str) -> list[str]:
    if not url:
        return []
    found = re.findall(r"password\s*=\s*'?([^'\s]+)", url)
    try:
        from psycopg.conninfo import conninfo_to_dict

        from runner.settings import libpq_dsn

        password = conninfo_to_dict(libpq_dsn(url)).get("password")
        if password:
            found.append(str(password))
    except Exception:  # an unparsable URL fails later, with its own message
        match = re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*:([^@]+)@", url)
        if match:
            found.append(match.group(1))
    return found


class Redactor:
    """Replaces the given secret values (and their JSON-escaped forms) and token shapes."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_LEN:
                continue
            forms.add(secret)
            escaped = json.dumps(secret)[1:-1]
            if escaped != secret:
                forms.add(escaped)
        self.secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text


_lock = threading.Lock()
_current: Redactor | None = None


def install(settings: "Settings | None") -> Redactor:
    """Make the redactor of these settings (and the environment) the process's own."""
    global _current
    with _lock:
        _current = Redactor(secret_values(settings))
        return _current


def current() -> Redactor:
    """The process's redactor; until install() is called, one built from the environment."""
    global _current
    with _lock:
        if _current is None:
            _current = Redactor(secret_values(None))
        return _current


def redact(text: str) -> str:
    return current()(text)


def storable(text: str) -> str:
    """NUL removed, lone surrogates (and invalid UTF-8's escapes) replaced by U+FFFD."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def cap(text: str, limit: int = TEXT_CAP) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return text[:limit] + f"\n[… {cut} more characters cut by the runner]"


def safe_text(text: str | None, limit: int | None = TEXT_CAP,
              redactor: Redactor | None = None) -> str | None:
    """Storable, capped (before redacting: a 20 MB answer is not scanned whole), redacted."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    text = storable(text)
    if limit is not None:
        text = cap(text, limit)
    return (redactor or current())(text)


def safe_json(value: Any, limit: int | None = TEXT_CAP, redactor: Redactor | None = None,
              _depth: int = 0) -> Any:
    """Every string (keys too) of a JSON value made safe; other scalars as they are."""
    redactor = redactor or current()
    if isinstance(value, str):
        return safe_text(value, limit, redactor)
    if isinstance(value, dict):
        return {safe_text(str(k), 1024, redactor): safe_json(v, limit, redactor, _depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_json(v, limit, redactor, _depth + 1) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None  # jsonb has no NaN or infinity
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return safe_text(str(value), limit, redactor)
