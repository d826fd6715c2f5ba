"""The CLI's first hour: a sentence (never a traceback, never a password) for a bad or
unreachable DATABASE_URL, validated options, and a migrate that says what it did."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import pytest

from runner import dburl
from tests.conftest import REPO

CANARY = "Canary7pw"

# Every command, with the arguments it needs to get as far as the database.
COMMANDS = [
    ["migrate"], ["enqueue", "--prompt", "p"], ["jobs"], ["show", "abc"], ["cancel", "abc"],
    ["retry", "abc"], ["workers"], ["prune", "--days", "3"], ["logs", str(uuid.uuid4())],
    ["health"],
]

MALFORMED = [
    "notaurl" + CANARY,
    f"mysql://user:{CANARY}@db/x",
    f"postgresql//user:{CANARY}@db/x",
    f"postgresql://user:{CANARY} with space@127.0.0.1:5432/x",
    f"postgresql://user:{CANARY}@127.0.0.1:notaport/x",
]


def runner(env, *args):
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _assert_clean(proc):
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert CANARY not in both and "with space" not in both, both


@pytest.mark.parametrize("url", MALFORMED)
def test_every_command_with_a_malformed_url_says_so_without_the_password(runner_env, url):
    env = {**runner_env, "DATABASE_URL": url}
    for argv in COMMANDS:
        proc = runner(env, *argv)
        _assert_clean(proc)
        if argv[0] in ("logs", "health"):
            continue  # read files first; they may answer without the database
        assert proc.returncode == 1, (argv, proc.stderr)
        assert "DATABASE_URL" in proc.stderr, (argv, proc.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_and_missing_database_are_one_sentence(runner_env, db_url):
    down = f"postgresql://postgres:{CANARY}@127.0.0.1:{_free_port()}/x"
    missing = db_url.rsplit("/", 1)[0].replace("://", f"://", 1) + "/no_such_db_" + uuid.uuid4().hex[:6]
    for url, words in ((down, "cannot connect"), (missing, "does not exist")):
        env = {**runner_env, "DATABASE_URL": url}
        proc = runner(env, "migrate")
        _assert_clean(proc)
        assert proc.returncode == 3 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        for argv in COMMANDS[1:8]:
            proc = runner(env, *argv)
            _assert_clean(proc)
            assert proc.returncode == 3, (argv, proc.stderr)


def test_first_migrate_says_it_created_the_schema(runner_env, empty_db_url):
    env = {**runner_env, "DATABASE_URL": empty_db_url}
    first = runner(env, "migrate")
    assert first.returncode == 0 and "created the database schema" in first.stdout, first.stderr
    again = runner(env, "migrate")
    assert again.returncode == 0 and "up to date" in again.stdout


@pytest.mark.parametrize("argv", [
    ["jobs", "--limit", "-1"], ["jobs", "--limit", "0"], ["jobs", "--limit", "many"],
    ["prune", "--days", "nan"], ["prune", "--days", "inf"], ["prune", "--days", "1e308"],
    ["prune", "--days", "-3"], ["enqueue", "--prompt", "p", "--max-attempts", "0"],
    ["jobs", "--status", "bogus"],
])
def test_bad_numbers_and_statuses_are_usage_errors(runner_env, queue, argv):
    job = queue.enqueue(prompt="kept")
    queue.request_cancel(job["id"])  # finished now: prune --days -3 must not delete it
    proc = runner(runner_env, *argv)
    _assert_clean(proc)
    assert proc.returncode == 2 and "error: argument" in proc.stderr, proc.stderr
    if argv[-1] == "bogus":
        assert "queued" in proc.stderr and "cancelled" in proc.stderr
    assert queue.get(job["id"]) is not None


def test_health_serve_on_a_busy_port_is_a_sentence(runner_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**runner_env, "RUNNER_HEALTH_BIND": "127.0.0.1", "RUNNER_HEALTH_PORT": str(port)}
        proc = runner(env, "health", "--serve")
    _assert_clean(proc)
    assert proc.returncode == 1 and "already in use" in proc.stderr and "RUNNER_HEALTH_PORT" in proc.stderr


def test_scrub_hides_every_piece_of_a_password():
    url = "postgresql://u:se cret@h/db"
    assert dburl.scrub("a se cret b cret c", url) == "a *** b *** c"
    assert dburl.passwords("postgresql//user:pw123@db/x") == ["pw123"]
