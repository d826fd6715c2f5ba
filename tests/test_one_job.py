"""`python -m runner.one_job` end to end: real processes, a real PostgreSQL, real git."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import psycopg
import pytest

from runner.queue import Queue
from tests.conftest import fake, make_git_repo, run_one_job, start_one_job


def test_a_stub_job_on_a_repository_succeeds_with_its_commit(runner_env, queue, git_repo, tmp_path):
    job = queue.enqueue(prompt="add a note", repo_url=git_repo, config={"agent": "stub"})
    proc = run_one_job(runner_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    commits = row["result"]["commits"]
    assert commits["count"] == 1 and [c["subject"] for c in commits["list"]] == ["stub: record the prompt"]
    assert [e["event"] for e in queue.events(job["id"])] == ["enqueued", "claimed", "running", "succeeded"]
    # The job's log is a relative link to the run log and holds the agent's output.
    link = tmp_path / "logs" / "jobs" / f"{job['id']}.log"
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert "stub agent: committed it" in link.read_text()
    # Success removes the worktree; the payload never outlives the run.
    assert not (tmp_path / "jobs" / str(job["id"])).exists()


def test_a_job_without_repository_runs_in_an_empty_directory(runner_env, queue, tmp_path):
    seen = tmp_path / "seen.json"
    job = queue.enqueue(prompt="p", config=fake(env_dump=str(seen), pidfile=str(tmp_path / "pid")))
    proc = run_one_job(runner_env)
    assert proc.returncode == 0, proc.stdout
    assert queue.get(job["id"])["status"] == "succeeded"
    env = json.loads(seen.read_text())
    payload_path = Path(env["RUNNER_PAYLOAD"])
    assert payload_path.parent == tmp_path / "jobs" / str(job["id"])
    assert not payload_path.exists()  # removed after the run


def test_an_iteration_started_as_its_supervisor_stops_claims_nothing(runner_env, queue):
    # A SIGTERM between the supervisor's fork and the exec is lost (runner/state.py); the
    # supervisor's state.json says "stopping", and the iteration (our child here) obeys it.
    job = queue.enqueue(prompt="p", config=fake())
    state_dir = Path(runner_env["RUNNER_STATE_DIR"])
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text(json.dumps({"status": "stopping",
                                                      "supervisor_pid": os.getpid()}))
    proc = run_one_job(runner_env, RUNNER_WAIT_SECONDS="30")
    assert proc.returncode == 143, proc.stdout + proc.stderr
    row = queue.get(job["id"])
    assert (row["status"], row["attempts"]) == ("queued", 0)


def test_payload_is_private_and_holds_the_job(runner_env, queue, tmp_path):
    copy = tmp_path / "payload-copy"
    job = queue.enqueue(prompt="p", payload={"ticket": 42},
                        config={**fake(sleep=3), "note": "x"})
    proc = start_one_job(runner_env)
    payload = tmp_path / "jobs" / str(job["id"]) / "payload.json"
    _wait_for(lambda: payload.exists() and payload.stat().st_size > 0, timeout=30)
    mode = stat.S_IMODE(payload.stat().st_mode)
    copy.write_text(payload.read_text())
    proc.kill()
    proc.wait()
    assert mode == 0o600
    body = json.loads(copy.read_text())
    assert body["id"] == str(job["id"]) and body["payload"] == {"ticket": 42}
    assert body["config"]["note"] == "x" and "claim_token" not in body


def test_bad_input_fails_with_a_reason_and_the_next_job_still_runs(runner_env, queue, tmp_path):
    bad = {
        "unknown agent": queue.enqueue(prompt="p", config={"agent": "hal9000"}),
        "wrong type": queue.enqueue(prompt="p", config={"agent": "stub", "timeout_s": "soon"}),
        "no repo": queue.enqueue(prompt="p", repo_url=f"file://{tmp_path}/nope", config={"agent": "stub"}),
        "empty prompt": queue.enqueue(prompt="   ", config={"agent": "stub"}),
    }
    with psycopg.connect(runner_env["DATABASE_URL"], autocommit=True) as conn:
        config_not_object = conn.execute(
            "INSERT INTO jobs (prompt, config) VALUES ('p', '[1, 2]') RETURNING id").fetchone()[0]
    good = queue.enqueue(prompt="fine", config={"agent": "stub"})
    for _ in range(6):
        assert run_one_job(runner_env).returncode == 0
    errors = {name: queue.get(job["id"]) for name, job in bad.items()}
    assert all(r["status"] == "failed" for r in errors.values())
    assert "unknown agent 'hal9000'" in errors["unknown agent"]["error"]
    assert "config.timeout_s must be a whole number" in errors["wrong type"]["error"]
    assert "could not clone or fetch" in errors["no repo"]["error"]
    assert "empty prompt" in errors["empty prompt"]["error"]
    row = queue.get(config_not_object)
    assert row["status"] == "failed" and "config must be a JSON object" in row["error"]
    assert queue.get(good["id"])["status"] == "succeeded"


def test_missing_agent_binary_hands_the_claim_back_and_exits_1(runner_env, queue):
    job = queue.enqueue(prompt="p", config={"agent": "command"})
    proc = run_one_job(runner_env, RUNNER_AGENT_COMMAND="/nonexistent/agent-binary --flag")
    assert proc.returncode == 1
    assert "/nonexistent/agent-binary" in proc.stdout and "was not found" in proc.stdout
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0


def test_a_failing_agent_is_retried_with_backoff_then_fails(runner_env, queue):
    job = queue.enqueue(prompt="p", max_attempts=2, config=fake(exit=2, stderr=["disk on fire"]))
    env = {**runner_env, "RUNNER_RETRY_BACKOFF_SECONDS": "0"}
    assert run_one_job(env).returncode == 0
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 1 and "disk on fire" in row["error"]
    assert run_one_job(env).returncode == 0
    row = queue.get(job["id"])
    assert row["status"] == "failed" and "exited with code 2" in row["error"]
    assert "no attempts left" in row["error"]


def test_blocked_md_ends_the_job_blocked_with_the_question(runner_env, queue, git_repo):
    job = queue.enqueue(prompt="p", repo_url=git_repo,
                        config=fake(blocked="Which database should the migration target?"))
    assert run_one_job(runner_env).returncode == 0
    row = queue.get(job["id"])
    assert row["status"] == "blocked"
    assert row["error"] == row["result"]["question"] == "Which database should the migration target?"


def test_a_job_enqueued_while_waiting_is_claimed_by_notify(runner_env, queue):
    env = {**runner_env, "RUNNER_WAIT_SECONDS": "30", "RUNNER_POLL_SECONDS": "600"}
    proc = start_one_job(env)
    _wait_for_listener(runner_env["DATABASE_URL"])
    enqueued_at = time.monotonic()
    job = queue.enqueue(prompt="p", config={"agent": "stub"})
    claimed_at = _wait_for(lambda: queue.get(job["id"])["status"] != "queued", timeout=10)
    proc.wait(timeout=30)
    # With a 600 s poll interval only the NOTIFY can have woken it within a second.
    assert claimed_at - enqueued_at < 1.0
    assert queue.get(job["id"])["status"] == "succeeded"


def test_the_listen_connection_killed_the_worker_reconnects(runner_env, queue):
    env = {**runner_env, "RUNNER_WAIT_SECONDS": "30", "RUNNER_POLL_SECONDS": "600"}
    proc = start_one_job(env)
    pid = _wait_for_listener(runner_env["DATABASE_URL"])
    with psycopg.connect(runner_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    new_pid = _wait_for_listener(runner_env["DATABASE_URL"], not_pid=pid)
    assert new_pid != pid
    job = queue.enqueue(prompt="p", config={"agent": "stub"})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert queue.get(job["id"])["status"] == "succeeded"
    assert "listen_connection_lost" in out


def test_a_waiting_worker_holds_one_connection_and_is_woken_on_it(runner_env, queue):
    env = {**runner_env, "RUNNER_WAIT_SECONDS": "30", "RUNNER_POLL_SECONDS": "600"}
    proc = start_one_job(env)
    pid = _wait_for_listener(runner_env["DATABASE_URL"])
    with psycopg.connect(runner_env["DATABASE_URL"], autocommit=True) as conn:
        ours = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'runner:%%' "
            "AND datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    # `queue` (the test's own) is named runner:queue:test-…; the worker's one is the listener.
    assert [r[0] for r in ours if r[0] != _queue_pid(queue)] == [pid]
    job = queue.enqueue(prompt="p", config={"agent": "stub"})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert queue.get(job["id"])["status"] == "succeeded"


def _queue_pid(queue: Queue) -> int:
    return queue.conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]


def test_sigkill_mid_job_is_recovered_after_the_lease(runner_env, queue, tmp_path):
    env = {**runner_env, "RUNNER_LEASE_SECONDS": "2"}
    pidfile = tmp_path / "agent.pid"
    job = queue.enqueue(prompt="p", config=fake(sleep=60, pidfile=str(pidfile)))
    proc = start_one_job(env, RUNNER_WORKER_ID="doomed")
    _wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=20)
    dead = queue.get(job["id"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.killpg(int(pidfile.read_text()), signal.SIGKILL)  # what a container stop would do
    time.sleep(2.5)  # the lease runs out

    # Another worker's iteration requeues and completes it; the attempt is counted.
    queue.conn.execute("UPDATE jobs SET config = jsonb_set(config, '{fake}', '{}')")
    assert run_one_job(env, RUNNER_WORKER_ID="rescuer").returncode == 0
    row = queue.get(job["id"])
    assert row["status"] == "succeeded" and row["attempts"] == 2
    events = [e["event"] for e in queue.events(job["id"])]
    assert events == ["enqueued", "claimed", "running", "lease_expired", "claimed", "running", "succeeded"]

    # A late write carrying the dead claim's token changes nothing.
    from runner.queue import Claim
    stale = Claim(dead)
    late = Queue.open(runner_env["DATABASE_URL"], "doomed")
    assert not late.finish(stale, "failed", error="late")
    assert not late.requeue(stale, event="rolled_back", reason="late", refund_attempt=True)
    late.close()
    assert queue.get(job["id"])["status"] == "succeeded"


def test_a_restarted_worker_hands_back_what_its_dead_iteration_held(runner_env, queue, tmp_path):
    pidfile = tmp_path / "agent.pid"
    job = queue.enqueue(prompt="p", config=fake(sleep=60, pidfile=str(pidfile)))
    proc = start_one_job(runner_env, RUNNER_WORKER_ID="box-1")
    _wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=20)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    queue.conn.execute("UPDATE jobs SET config = jsonb_set(config, '{fake}', '{}')")
    # Same worker id, long lease: reconcile returns it at once instead of waiting.
    assert run_one_job(runner_env, RUNNER_WORKER_ID="box-1").returncode == 0
    row = queue.get(job["id"])
    assert row["status"] == "succeeded" and row["attempts"] == 2
    assert "reconciled" in [e["event"] for e in queue.events(job["id"])]


@pytest.mark.slow
def test_eight_workers_share_two_hundred_jobs_each_run_once(runner_env, queue, tmp_path):
    ids = [queue.enqueue(prompt=f"job {i}", config={"agent": "stub"})["id"] for i in range(200)]
    failures: list[str] = []

    def worker(n: int) -> None:
        while True:
            proc = run_one_job(runner_env, RUNNER_WORKER_ID=f"w{n}", timeout=120)
            if proc.returncode != 0:
                failures.append(proc.stdout[-2000:])
                return
            if '"event": "no_job"' in proc.stdout:
                return

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    rows = queue.conn.execute(
        "SELECT status, attempts FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    assert [r["status"] for r in rows] == ["succeeded"] * 200
    assert all(r["attempts"] == 1 for r in rows)
    counts = queue.conn.execute(
        "SELECT job_id, count(*) FILTER (WHERE event = 'claimed') AS claims, "
        "count(*) FILTER (WHERE event = 'succeeded') AS wins FROM job_events GROUP BY job_id").fetchall()
    assert len(counts) == 200 and all(c["claims"] == 1 and c["wins"] == 1 for c in counts)


def test_a_bad_setting_stops_the_iteration_naming_it(runner_env):
    proc = run_one_job(runner_env, RUNNER_LEASE_SECONDS="five minutes")
    assert proc.returncode == 1
    assert "RUNNER_LEASE_SECONDS" in proc.stderr and "integer" in proc.stderr
    proc = run_one_job({k: v for k, v in runner_env.items() if k != "DATABASE_URL"})
    assert proc.returncode == 1
    assert "\n  DATABASE_URL: required but not set" in proc.stderr


def test_database_down_exits_1_with_a_message(runner_env):
    proc = run_one_job(runner_env, DATABASE_URL="postgresql://nobody:secretpw@127.0.0.1:1/none")
    assert proc.returncode == 1
    assert "the database cannot be reached" in proc.stdout
    assert "secretpw" not in proc.stdout + proc.stderr


def _wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def _wait_for_listener(url: str, not_pid: int | None = None) -> int:
    """The backend of a worker that LISTENs: named runner:listen:<worker> (a dedicated
    connection, once it has run its LISTEN; or the claiming one, renamed with its LISTEN)."""
    found: list[int] = []

    def listening() -> bool:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'runner:listen:%%' "
                "AND datname = current_database() AND query <> ''").fetchall()
        found[:] = [r[0] for r in rows if r[0] != not_pid]
        return bool(found)

    _wait_for(listening, timeout=20)
    return found[0]
