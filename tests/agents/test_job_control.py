"""End to end through ``python -m runner.one_job`` with the fake agent and a real PostgreSQL:
timeouts, cancel, a lost lease, SIGTERM, and a grandchild that ignores SIGTERM."""

from __future__ import annotations

import signal
import subprocess

import psycopg

from tests.agents.proc import alive, pid_in, wait_for
from tests.conftest import fake, run_one_job, start_one_job

FAST = {"RUNNER_LEASE_SECONDS": "3"}  # heartbeat every second


def _events(queue, job_id) -> list[str]:
    return [e["event"] for e in queue.events(job_id)]


def test_timeout_is_retried_then_failed(queue, runner_env, git_repo) -> None:
    job = queue.enqueue(prompt="slow", repo_url=git_repo, max_attempts=2,
                        config={**fake(sleep=30), "timeout_s": 1})
    proc = run_one_job(runner_env, RUNNER_RETRY_BACKOFF_SECONDS="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["error"] == "timed out after 1 s"
    assert row["attempts"] == 1 and "retry_scheduled" in _events(queue, job["id"])
    proc = run_one_job(runner_env, RUNNER_RETRY_BACKOFF_SECONDS="0")
    assert proc.returncode == 0
    row = queue.get(job["id"])
    assert row["status"] == "failed"
    assert row["error"] == "timed out after 1 s (attempt 2 of 2; no attempts left)"


def test_cancel_while_running(queue, runner_env, git_repo, tmp_path) -> None:
    pidfile, grandchild = tmp_path / "agent.pid", tmp_path / "grandchild.pid"
    job = queue.enqueue(prompt="long", repo_url=git_repo,
                        config=fake(sleep=60, pidfile=str(pidfile), grandchild=str(grandchild)))
    proc = start_one_job(runner_env, **FAST)
    agent, child = pid_in(pidfile), pid_in(grandchild)
    assert queue.request_cancel(job["id"]) == "running"
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    row = queue.get(job["id"])
    assert row["status"] == "cancelled" and row["error"] == "cancelled by an operator"
    assert not alive(agent) and not alive(child)


def test_lost_lease_stops_the_agent_and_leaves_the_job_alone(queue, runner_env, git_repo, db_url, tmp_path) -> None:
    pidfile = tmp_path / "agent.pid"
    job = queue.enqueue(prompt="long", repo_url=git_repo, config=fake(sleep=60, pidfile=str(pidfile)))
    proc = start_one_job(runner_env, **FAST)
    agent = pid_in(pidfile)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET claim_token = gen_random_uuid(), claimed_by = 'other-worker' "
                     "WHERE id = %s", (job["id"],))
        before = conn.execute("SELECT status, attempts, claim_token, error FROM jobs WHERE id = %s",
                              (job["id"],)).fetchone()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert not alive(agent)
    with psycopg.connect(db_url) as conn:
        after = conn.execute("SELECT status, attempts, claim_token, error, claimed_by FROM jobs "
                             "WHERE id = %s", (job["id"],)).fetchone()
    assert after[:4] == before and after[4] == "other-worker"


def test_sigterm_rolls_back_without_using_an_attempt(queue, runner_env, git_repo, tmp_path) -> None:
    pidfile, grandchild = tmp_path / "agent.pid", tmp_path / "grandchild.pid"
    job = queue.enqueue(prompt="long", repo_url=git_repo,
                        config=fake(sleep=60, pidfile=str(pidfile), grandchild=str(grandchild)))
    proc = start_one_job(runner_env, **FAST)
    agent, child = pid_in(pidfile), pid_in(grandchild)
    wait_for(lambda: queue.get(job["id"])["status"] == "running", what="running")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143, out
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0 and row["claimed_by"] is None
    assert not alive(agent) and not alive(child)


def test_grandchild_ignoring_sigterm_does_not_survive(queue, runner_env, git_repo, tmp_path) -> None:
    grandchild = tmp_path / "grandchild.pid"
    job = queue.enqueue(prompt="quick", repo_url=git_repo, config=fake(grandchild=str(grandchild), sleep=1))
    proc = run_one_job(runner_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert queue.get(job["id"])["status"] == "succeeded"
    child = pid_in(grandchild, timeout=1)
    assert not alive(child)
    leftover = subprocess.run(["pgrep", "-f", str(grandchild)], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
