"""Issue 13, item 1: a cancel or a lost claim reaches the running agent through LISTEN, not
at the next lease renewal. Each test sets a lease whose renewal would come only after 60 s
and waits at most 20 s for the outcome: the agent can only have been stopped by the
notification (the safety-net renewal never ran)."""

from __future__ import annotations

import psycopg

from tests.agents.proc import alive, pid_in, wait_for
from tests.conftest import fake, start_one_job

SLOW_RENEWAL = {"RUNNER_LEASE_SECONDS": "180"}  # renewed every 60 s
WAIT = 20


def _events(queue, job_id) -> list[str]:
    return [e["event"] for e in queue.events(job_id)]


def _start(queue, runner_env, git_repo, tmp_path, **behaviour):
    pidfile, grandchild = tmp_path / "agent.pid", tmp_path / "grandchild.pid"
    job = queue.enqueue(prompt="long", repo_url=git_repo,
                        config=fake(sleep=120, pidfile=str(pidfile), grandchild=str(grandchild),
                                    **behaviour))
    proc = start_one_job(runner_env, **SLOW_RENEWAL)
    agent, child = pid_in(pidfile), pid_in(grandchild)
    wait_for(lambda: queue.get(job["id"])["status"] == "running", what="running")
    return job, proc, agent, child


def test_runner_cancel_stops_the_agent_before_any_renewal(queue, runner_env, git_repo, tmp_path):
    job, proc, agent, child = _start(queue, runner_env, git_repo, tmp_path)
    assert queue.request_cancel(job["id"], by="test") == "running"
    out, _ = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, out
    row = queue.get(job["id"])
    assert row["status"] == "cancelled" and row["error"] == "cancelled by an operator"
    assert not alive(agent) and not alive(child)
    assert _events(queue, job["id"])[-2:] == ["cancel_requested", "cancelled"]


def test_the_web_apps_own_update_cancels_too(queue, runner_env, git_repo, tmp_path, db_url):
    job, proc, agent, child = _start(queue, runner_env, git_repo, tmp_path)
    with psycopg.connect(db_url, autocommit=True) as conn:  # what a web app does: no event row
        conn.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", (job["id"],))
    out, _ = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, out
    row = queue.get(job["id"])
    assert row["status"] == "cancelled" and row["error"] == "cancelled by an operator"
    assert not alive(agent) and not alive(child)
    assert '"event": "cancel_requested"' in out  # the worker's log says what it heard


def test_a_claim_taken_over_stops_the_agent_and_leaves_the_row_alone(queue, runner_env, git_repo,
                                                                     tmp_path, db_url):
    job, proc, agent, child = _start(queue, runner_env, git_repo, tmp_path)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET claim_token = gen_random_uuid(), claimed_by = 'other-worker' "
                     "WHERE id = %s", (job["id"],))
        before = conn.execute("SELECT status, attempts, claim_token FROM jobs WHERE id = %s",
                              (job["id"],)).fetchone()
    out, _ = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, out
    assert not alive(agent) and not alive(child)
    with psycopg.connect(db_url) as conn:
        after = conn.execute("SELECT status, attempts, claim_token, claimed_by FROM jobs "
                             "WHERE id = %s", (job["id"],)).fetchone()
    assert after[:3] == before and after[3] == "other-worker"
    assert '"event": "claim_lost"' in out


def test_a_notification_is_only_a_hint(queue, runner_env, git_repo, tmp_path, db_url):
    """A NOTIFY that names the job but is not backed by the row changes nothing."""
    job, proc, agent, _child = _start(queue, runner_env, git_repo, tmp_path)
    job_log = tmp_path / "logs" / "jobs" / f"{job['id']}.log"
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for event in ("cancel_requested", "claim", "status"):
                conn.execute("SELECT pg_notify('runner_jobs', %s)",
                             (f'{{"id": "{job["id"]}", "status": "cancelled", "event": "{event}"}}',))
        # The forged notices were heard (the row was read again) and the agent runs on.
        wait_for(lambda: job_log.read_text().count('"event": "claim_checked"') >= 1,
                 timeout=WAIT, what="the row checked after the notification")
        assert '"held": true' in job_log.read_text()
        assert proc.poll() is None and alive(agent)
        assert queue.get(job["id"])["status"] == "running"
    finally:
        queue.request_cancel(job["id"])
        proc.communicate(timeout=WAIT)
    assert queue.get(job["id"])["status"] == "cancelled"


def test_a_queued_job_flagged_by_the_web_app_never_starts(queue, runner_env, git_repo, tmp_path,
                                                          db_url):
    pidfile = tmp_path / "agent.pid"
    job = queue.enqueue(prompt="p", repo_url=git_repo, config=fake(pidfile=str(pidfile)))
    with psycopg.connect(db_url, autocommit=True) as conn:  # the flag only; status stays queued
        conn.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", (job["id"],))
    proc = start_one_job(runner_env)
    out, _ = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, out
    row = queue.get(job["id"])
    assert row["status"] == "cancelled" and row["error"] == "cancelled before it started"
    assert not pidfile.exists() and not (tmp_path / "jobs" / str(job["id"])).exists()
