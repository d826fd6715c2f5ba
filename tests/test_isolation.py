"""Who the agent runs as: the start-up check (refuse, or warn once)."""

from tests.conftest import fake, run_one_job


def test_required_isolation_without_an_agent_user_refuses_before_claiming(runner_env, queue):
    job = queue.enqueue(prompt="p", config=fake())
    proc = run_one_job(runner_env, RUNNER_REQUIRE_AGENT_ISOLATION="true")
    assert proc.returncode == 1
    assert "RUNNER_REQUIRE_AGENT_ISOLATION" in proc.stderr and "RUNNER_AGENT_USER" in proc.stderr
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0


def test_a_shared_uid_is_said_once_per_worker(runner_env, queue):
    first = run_one_job(runner_env, RUNNER_WORKER_ID="w-1")
    second = run_one_job(runner_env, RUNNER_WORKER_ID="w-1")
    assert "agent_shares_runner_uid" in first.stdout
    assert "agent_shares_runner_uid" not in second.stdout
