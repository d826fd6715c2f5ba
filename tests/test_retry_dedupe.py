"""`runner retry` on a job whose dedupe_key another unfinished job holds now: a sentence
naming that job, not the database's unique violation."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from runner import client
from runner.errors import DedupeKeyTaken
from tests.conftest import REPO


def test_retry_names_the_job_that_holds_the_dedupe_key(db_url, queue, runner_env):
    with psycopg.connect(db_url) as conn:
        first = client.enqueue(conn, prompt="p", dedupe_key="order-42")
    queue.finish(queue.claim(["default"], 60), "failed", error="no")
    with psycopg.connect(db_url) as conn:
        second = client.enqueue(conn, prompt="p again", dedupe_key="order-42")
    assert second.created
    with pytest.raises(DedupeKeyTaken) as exc:
        queue.retry(first.id)
    assert str(exc.value) == (
        f"job {first.id} cannot be retried: its dedupe_key 'order-42' is held by job {second.id}, "
        f"which is queued; retry it once that job has finished (or cancel that one)")
    proc = subprocess.run([sys.executable, "-m", "runner", "retry", str(first.id)], env=runner_env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode != 0 and str(second.id) in proc.stderr
    assert "UniqueViolation" not in proc.stderr and "duplicate key" not in proc.stderr
    # Once the holder finished, the retry goes through.
    queue.finish(queue.claim(["default"], 60), "succeeded", result={})
    assert queue.retry(first.id) and queue.get(first.id)["status"] == "queued"
