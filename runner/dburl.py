"""DATABASE_URL as the operator sees it: checked for shape before any connection, described
without its password, and scrubbed out of driver messages.

A message about the database names the host, port and database, never the URL itself: the URL
holds the password, and a malformed one (``postgresql//user:pw@db``, a space in the password)
is exactly the case the drivers echo back whole.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from runner.errors import SettingsError

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
_EXAMPLE = "postgresql://user:password@host:5432/dbname"


def check(url: str) -> None:
    """Raise SettingsError with one sentence when ``url`` cannot be a PostgreSQL URL."""
    if not url.strip():
        raise SettingsError("DATABASE_URL is empty; set it to a URL like " + _EXAMPLE)
    if "://" not in url:
        if "=" in url and not url.startswith(("postgresql", "postgres")):
            return  # libpq's key=value form (host=... dbname=...); libpq checks it
        raise SettingsError("DATABASE_URL is not a URL (no scheme://); it must look like " + _EXAMPLE)
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise SettingsError(f"DATABASE_URL uses the scheme {scheme[:20]!r}; the runner needs "
                            f"PostgreSQL: {_EXAMPLE}")
    if any(ch.isspace() for ch in url):
        raise SettingsError("DATABASE_URL contains a space; percent-encode it (%20) — "
                            "in a password, every character outside A-Z a-z 0-9 - . _ ~ should be")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise SettingsError("DATABASE_URL has a port that is not a number; it must look like "
                            + _EXAMPLE) from None


def describe(url: str) -> str:
    """``host:port/dbname`` (or what of it can be told), never the user's password."""
    if "://" not in url:
        return "the database DATABASE_URL names"
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
        db = unquote(parts.path.lstrip("/")) or (parts.username or "")
        return f"{host}:{port}/{db}"
    except ValueError:
        return "the DATABASE_URL"


def passwords(url: str) -> list[str]:
    """Every piece of ``url`` that may be its password (also when the URL is malformed)."""
    found = re.findall(r"password\s*=\s*'?([^'\s]+)", url)
    # user:password@ wherever it appears, with and without a well-formed scheme
    found += re.findall(r"(?:^|/)[^:/@]*:([^@/]+)@", url)
    found += [unquote(p) for p in found]
    pieces = [p for f in found for p in f.split() if len(p) >= 3]
    return sorted({p for p in found + pieces if p}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL and everything that may be its password replaced by ***."""
    if url:
        text = text.replace(url, "<DATABASE_URL>")
    for secret in passwords(url):
        text = text.replace(secret, "***")
    return text
