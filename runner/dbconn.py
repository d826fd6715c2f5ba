"""The database connection every part of the runner opens, and the statements file.

``connect`` gives an autocommit connection with dict rows, the pooler's options and a JSON
reader that survives what Python's cannot read; ``queries`` the named statements of
``sql/queries.sql`` that runner/queue.py runs.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from runner import pooler
from runner.errors import DatabaseUnavailable

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)


@cache
def queries() -> dict[str, str]:
    text = resources.files("runner").joinpath("sql/queries.sql").read_text()
    parts = _NAME.split(text)
    return {name: _without_comment_lines(body) for name, body in zip(parts[1::2], parts[2::2])}


def _without_comment_lines(body: str) -> str:
    """Without whole-line comments: psycopg caches a query's conversion only up to 4 096
    characters, which the claim passed with its comments."""
    return "\n".join(line for line in body.strip().splitlines() if not line.lstrip().startswith("--"))


class TooDeep(str):
    """Stands in for a JSON value nested too deeply for Python's json module (about 1000
    levels; PostgreSQL's jsonb takes far more). Reading such a row must not crash the
    iteration after its claim was committed: the job fails with a reason instead."""


def _json_loads(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        return TooDeep("<JSON nested too deeply to read>")


def connect(dsn: str, purpose: str, worker_id: str = "", *, connect_timeout: int = 10,
            **options: Any) -> psycopg.Connection:
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, row_factory=dict_row, connect_timeout=connect_timeout,
            application_name=f"runner:{purpose}:{worker_id}"[:63],
            **{**pooler.connect_options(dsn), **options},
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"the database cannot be reached: {one_line(exc)}") from exc
    set_json_loads(_json_loads, conn)
    return conn


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
