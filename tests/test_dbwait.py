"""runner.dbwait (the container's wait for its database) and runner.preclone's URL display:
the decisions with a fake clock and connect; the real start-up path is in
tests/docker/test_static.py (entrypoint on the host) and tests/docker/test_container.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runner import dbwait
from runner.preclone import shown

URL = "postgresql+psycopg://runner:s3cret-pw@db.example:5433/queue"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_until_the_database_answers_and_says_where_without_the_password():
    clock, said, tries = Clock(), [], []

    def connect(dsn: str, timeout: int) -> None:
        tries.append((dsn, timeout))
        if len(tries) < 4:
            raise OSError(f"connection to {dsn} refused")

    took = dbwait.wait(URL, 60, connect=connect, clock=clock, sleep=clock.sleep, report=said.append)
    assert took == 6 and len(tries) == 4
    assert tries[0][0].startswith("postgresql://")  # libpq's form, SQLAlchemy's prefix gone
    assert said[0] == "waiting up to 60s for the database at db.example:5433/queue"
    assert all("s3cret-pw" not in line for line in said)


def test_gives_up_after_the_time_with_the_scrubbed_reason():
    clock, said = Clock(), []

    def connect(dsn: str, timeout: int) -> None:
        raise OSError(f"password authentication failed for {dsn}")

    with pytest.raises(dbwait.DatabaseNotReachable) as err:
        dbwait.wait(URL, 30, connect=connect, clock=clock, sleep=clock.sleep, report=said.append)
    message = str(err.value)
    assert message.startswith("database at db.example:5433/queue not reachable after 30s: ")
    assert "RUNNER_DB_WAIT_SECONDS=30" in message and "s3cret-pw" not in message
    # Progress every 10 s, not every try.
    assert [line.split(" (")[0] for line in said[1:]] == ["database not reachable yet"] * 3


def run_main(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "runner.dbwait", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), **env}, timeout=60)


def test_main_names_what_is_wrong_with_the_settings(tmp_path):
    res = run_main({}, "10")
    assert res.returncode == 1 and "DATABASE_URL is not set (nor DATABASE_URL_FILE)" in res.stderr
    res = run_main({"DATABASE_URL": URL}, "soon")
    assert res.returncode == 1 and "RUNNER_DB_WAIT_SECONDS must be a number of seconds, got 'soon'" in res.stderr
    res = run_main({"DATABASE_URL": "mysql://u:s3cret-pw@h/db"}, "1")
    assert res.returncode == 1 and "scheme 'mysql'" in res.stderr and "s3cret-pw" not in res.stderr


def test_main_reads_the_url_from_a_secret_file_and_waits_boundedly(tmp_path):
    secret = tmp_path / "db_url"
    secret.write_text("postgresql://runner:s3cret-pw@127.0.0.1:1/queue\n")
    res = run_main({"DATABASE_URL_FILE": str(secret)}, "2")
    assert res.returncode == 1
    assert "database at 127.0.0.1:1/queue not reachable after" in res.stderr
    assert "s3cret-pw" not in res.stderr


def test_preclone_shows_urls_without_their_user_info():
    assert shown("https://user:tok@github.com/a/b.git") == "https://***@github.com/a/b.git"
    assert shown("https://github.com/a/b.git") == "https://github.com/a/b.git"
    assert shown("ssh://git@host/x.git") == "ssh://***@host/x.git"
