"""Through a connection pooler: PgBouncer (Debian's package) in transaction mode in front
of the test database, as a managed PostgreSQL's pooled URL is."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from runner import pooler
from tests.conftest import run_one_job, start_one_job

PGBOUNCER = "/usr/sbin/pgbouncer"


def _pgbouncer() -> str:
    if not Path(PGBOUNCER).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "pgbouncer"], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    if not Path(PGBOUNCER).exists():
        pytest.skip("PgBouncer is not installed (apt-get install pgbouncer)")
    return PGBOUNCER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pooled_url(db_url, tmp_path):
    """DATABASE_URL through PgBouncer (pool_mode=transaction). PgBouncer reaches PostgreSQL
    over its Unix socket, so its backends show no client address: a backend with one came
    straight from the runner."""
    binary = _pgbouncer()
    parts = urlsplit(db_url)
    if parts.hostname not in ("127.0.0.1", "localhost") or not Path("/var/run/postgresql").is_dir():
        pytest.skip("needs the machine's own PostgreSQL (Unix socket in /var/run/postgresql)")
    port = _free_port()
    # Not under tmp_path: PgBouncer refuses to run as root and runs as postgres, which
    # cannot enter pytest's private temp folders.
    home = Path(tempfile.mkdtemp(prefix="runner-pgbouncer-"))
    home.chmod(0o755)
    user = parts.username or "postgres"
    (home / "pgbouncer.ini").write_text(f"""[databases]
* = host=/var/run/postgresql port={parts.port or 5432} user={user}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 2
max_client_conn = 50
ignore_startup_parameters = extra_float_digits,options
logfile = {home}/pgbouncer.log
pidfile = {home}/pgbouncer.pid
""")
    runas = ["-u", "postgres"] if os.geteuid() == 0 else []
    if runas:
        pw = pwd.getpwnam("postgres")
        os.chown(home, pw.pw_uid, pw.pw_gid)
        for f in home.iterdir():
            os.chown(f, pw.pw_uid, pw.pw_gid)
    proc = subprocess.Popen([binary, *runas, str(home / "pgbouncer.ini")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))
    deadline = time.monotonic() + 15
    while True:
        try:
            psycopg.connect(url, connect_timeout=2, prepare_threshold=None).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                log = (home / "pgbouncer.log").read_text() if (home / "pgbouncer.log").exists() else ""
                pytest.fail(f"PgBouncer did not start: {proc.stderr.read()!r} {log}")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(home, ignore_errors=True)


def _listeners(direct_url: str) -> list[tuple]:
    with psycopg.connect(direct_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, client_addr FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' "
            "AND datname = current_database()").fetchall()


def test_a_job_is_claimed_and_run_through_the_pooler_and_listen_uses_the_direct_url(
        pooled_url, db_url, runner_env, queue):
    env = {**runner_env, "DATABASE_URL": pooled_url, "RUNNER_DATABASE_POOLER": "transaction",
           "RUNNER_LISTEN_DATABASE_URL": db_url, "RUNNER_WAIT_SECONDS": "60",
           "RUNNER_POLL_SECONDS": "600"}
    # Jobs first, so that the claim statement runs more often than psycopg's prepare
    # threshold on one connection: a prepared statement would fail behind the pooler.
    first = [queue.enqueue(prompt=f"p{i}", config={"agent": "stub"}) for i in range(7)]
    for _ in first:
        proc = run_one_job({**env, "RUNNER_WAIT_SECONDS": "0"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {queue.get(j["id"])["status"] for j in first} == {"succeeded"}

    proc = start_one_job(env)
    deadline = time.monotonic() + 20
    while not (found := _listeners(db_url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found and all(addr is not None for _pid, addr in found), \
        "LISTEN runs on a direct connection, not through the pooler"
    job = queue.enqueue(prompt="woken", config={"agent": "stub"})
    proc.wait(timeout=60)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    claimed = [e for e in queue.events(job["id"]) if e["event"] == "claimed"][0]
    # A 600 s poll and a 60 s wait: claimed well before the deadline, so by the NOTIFY.
    assert (claimed["at"] - row["created_at"]).total_seconds() < 30


def test_without_a_direct_url_it_polls_and_says_why_once(pooled_url, runner_env, queue, tmp_path):
    env = {**runner_env, "DATABASE_URL": pooled_url, "RUNNER_DATABASE_POOLER": "transaction",
           "RUNNER_WAIT_SECONDS": "1", "RUNNER_POLL_SECONDS": "0.2"}
    first = run_one_job(env)
    second = run_one_job(env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    said = first.stdout + first.stderr + second.stdout + second.stderr
    assert said.count("listen_unavailable_polling") == 1  # once per worker, not per iteration
    assert "RUNNER_LISTEN_DATABASE_URL" in said
    job = queue.enqueue(prompt="p", config={"agent": "stub"})
    assert run_one_job(env).returncode == 0
    assert queue.get(job["id"])["status"] == "succeeded"


@pytest.mark.parametrize("dsn, declared, pooled", [
    ("postgresql://u@db:6432/x", "auto", True),
    ("postgresql://u@ep-cool-123-pooler.eu.aws.neon.tech/x", "auto", True),
    ("postgresql://u@aws-0-eu.pooler.supabase.com:5432/x", "auto", True),
    ("postgresql://u@db:5432/x", "auto", False),
    ("postgresql://u@db:5432/x", "transaction", True),
    ("postgresql://u@db:6432/x", "session", False),
    ("postgresql://u@db:6432/x", "none", False),
])
def test_which_urls_count_as_a_transaction_pooler(dsn, declared, pooled):
    assert pooler.transaction_mode(dsn, declared) is pooled
