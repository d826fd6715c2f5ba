"""Alembic environment: the URL comes from the runner's settings or DATABASE_URL."""

from __future__ import annotations

import os

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool

from runner.schema import metadata
from runner.settings import libpq_dsn

config = context.config


def _dsn() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL: required but not set")
    return libpq_dsn(url)


def _url() -> str:
    return "postgresql+psycopg://" + _dsn().removeprefix("postgresql://")


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # psycopg itself parses the DSN (URL or key=value), exactly as the runner does.
    dsn = _dsn()
    engine = create_engine("postgresql+psycopg://", poolclass=pool.NullPool,
                           creator=lambda: psycopg.connect(dsn))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            # Two containers starting at once both run `runner migrate`: serialise them.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7246351001)")
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
