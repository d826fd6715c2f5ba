"""The queue protects itself (runner/guard.py), with the real Claude CLI against a loopback
model API that answers 529 to everything: after RUNNER_OVERLOAD_THRESHOLD overloaded runs
the agent is paused on its queue for every worker, no job loses an attempt, and the queue
resumes by itself once the API answers again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.agents.test_claude_cli import BIN, CONFIG, claude_env  # noqa: F401 - a fixture
from tests.conftest import REPO, run_one_job
from tests.fakes.anthropic_api import FakeAnthropic, error, text

pytestmark = [
    pytest.mark.claude_cli,
    pytest.mark.skipif(BIN is None, reason="the Claude Code CLI is not installed: run "
                       "tests/tools/install_claude.sh"),
]
PAUSE = 60  # RUNNER_OVERLOAD_PAUSE_SECONDS; the test makes a pause's time run out (_time_runs_out)


@pytest.fixture
def guard_env(claude_env):  # noqa: F811 - the fixture imported above
    return {**claude_env, "RUNNER_OVERLOAD_THRESHOLD": "2", "RUNNER_OVERLOAD_WINDOW_SECONDS": "600",
            "RUNNER_OVERLOAD_PAUSE_SECONDS": str(PAUSE), "RUNNER_OVERLOAD_PAUSE_MAX_SECONDS": "600",
            "RUNNER_CLAUDE_MAX_RETRIES": "0"}


def _guard(queue) -> dict:
    rows = queue.guard_states()
    return rows[0] if rows else {}


def _time_runs_out(queue) -> None:
    """The pause's time is over now, as if its minute had passed (for the overloaded jobs'
    own wait behind the others too)."""
    queue.conn.execute("UPDATE agent_pauses SET until = now() WHERE until > now()")
    queue.conn.execute("UPDATE jobs SET run_after = now() WHERE status = 'queued' AND run_after > now()")
    assert queue.pauses() == []


def _cli(env, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "runner", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    return proc.stdout + proc.stderr


def test_an_overloaded_api_pauses_the_fleet_refunds_every_attempt_and_recovers(guard_env, queue,
                                                                                 git_repo):
    # One attempt each: a run that cost its attempt would end the job failed.
    jobs = [queue.enqueue(prompt=f"Say hello {i}.", repo_url=git_repo, config=CONFIG,
                          max_attempts=1) for i in range(3)]
    api_down = {"now": True}

    def responder(_body):
        return error(529) if api_down["now"] else text("Hello.")

    with FakeAnthropic(responder) as api:
        env = {**guard_env, "ANTHROPIC_BASE_URL": api.base_url}
        # Two workers each hit the overload once: the second strike pauses the agent.
        for worker in ("w1", "w2"):
            proc = run_one_job(env, RUNNER_WORKER_ID=worker)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        state = _guard(queue)
        assert state["paused"] and state["pauses"] == 1 and "HTTP 529" in state["last_error"]
        assert [(p["queue"], p["agent"]) for p in queue.pauses()] == [("default", "claude")]
        rows = [queue.get(j["id"]) for j in jobs]
        assert {(r["status"], r["attempts"]) for r in rows} == {("queued", 0)}
        assert "overloaded (HTTP 529)" in rows[0]["error"] or "overloaded (HTTP 529)" in rows[1]["error"]

        # A third worker, during the pause, claims nothing: the API is asked nothing more.
        asked = len(api.message_requests)
        proc = run_one_job(env, RUNNER_WORKER_ID="w3")
        assert proc.returncode == 0 and len(api.message_requests) == asked
        assert "'default' is paused for agent 'claude'" in _cli(env, "jobs")
        assert "paused for agent 'claude'" in _cli(env, "workers")
        assert '"agent": "claude"' in _cli(env, "health")

        # The pause ends, the API is still down: the first run after it pauses again, twice as long.
        _time_runs_out(queue)
        proc = run_one_job(env, RUNNER_WORKER_ID="w1")
        state = _guard(queue)
        assert state["paused"] and state["pauses"] == 2
        assert (state["until"] - state["updated_at"]).total_seconds() == 2 * PAUSE

        # The API recovers: once the pause is over (its time made to run out now) a success
        # lifts the guard, and every job succeeds with its one attempt.
        api_down["now"] = False
        _time_runs_out(queue)
        for worker in ("w1", "w2", "w3"):
            proc = run_one_job(env, RUNNER_WORKER_ID=worker)
            assert proc.returncode == 0, proc.stdout[-3000:]
            assert _guard(queue) == {}
    rows = [queue.get(j["id"]) for j in jobs]
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * 3
