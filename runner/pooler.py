"""Connection poolers (PgBouncer, a managed database's pooled URL) in front of PostgreSQL.

Through a pooler in *transaction* mode each transaction may run on another server
connection, so two things break: server-side prepared statements (psycopg prepares a
statement after it ran five times) and LISTEN (the notifications go to a connection the
runner no longer holds). The runner turns prepared statements off for such a URL, and
LISTENs only on a direct URL (RUNNER_LISTEN_DATABASE_URL) — without one it polls.

``RUNNER_DATABASE_POOLER``: ``auto`` (default) assumes a transaction-mode pooler on port
6432 (PgBouncer's) or a host whose name says pooler/pgbouncer (Neon's ``-pooler``,
Supabase's ``pooler.supabase.com``); ``transaction``, ``session`` or ``none`` say it.
"""

from __future__ import annotations

import os

import psycopg.conninfo

_NAMES = ("pooler", "pgbouncer", "pgpool")


def transaction_mode(dsn: str, declared: str | None = None) -> bool:
    declared = declared or os.environ.get("RUNNER_DATABASE_POOLER") or "auto"
    if declared != "auto":
        return declared == "transaction"
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return False
    host, port = str(info.get("host") or ""), str(info.get("port") or "")
    return port == "6432" or any(name in host.lower() for name in _NAMES)


def connect_options(dsn: str) -> dict:
    """psycopg connection options for this URL: no prepared statements behind a pooler."""
    return {"prepare_threshold": None} if transaction_mode(dsn) else {}
