"""Issue 13 with the real Claude Code CLI through the loopback Messages API: budgets (its own
--max-budget-usd, the runner's max_tokens from the stream) and progress while it runs."""

from __future__ import annotations

from pathlib import Path

from tests.agents.test_claude_cli import BIN, CONFIG, claude_env, pytestmark  # noqa: F401
from tests.conftest import run_one_job
from tests.fakes.anthropic_api import FakeAnthropic, script, text, tool_use

assert BIN is None or BIN.exists()


def _writes(claude_env, job_id, n: int):
    """A scripted session: n Write tool calls, one per turn, then a final answer."""
    work = Path(claude_env["RUNNER_JOB_ROOT"]) / str(job_id) / "work"
    return script(*[tool_use("Write", {"file_path": str(work / f"step{i}.txt"),
                                       "content": f"step {i}\n"}) for i in range(n)],
                  text("All steps written."))


def test_a_small_dollar_budget_stops_claude_itself(claude_env, queue, git_repo):
    job = queue.enqueue(prompt="Write the steps.", repo_url=git_repo,
                        config={**CONFIG, "max_turns": 10, "max_budget_usd": 0.03})
    with FakeAnthropic(_writes(claude_env, job["id"], 6)) as api:
        proc = run_one_job(claude_env, ANTHROPIC_BASE_URL=api.base_url)
        asked = len(api.message_requests)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "failed", row["error"]
    assert row["error"].startswith("budget of $0.03 reached after $0.")
    assert "Claude Code stopped at its --max-budget-usd" in row["error"]
    r = row["result"]
    assert r["cost_usd"] >= 0.03 and r["usage"]["input_tokens"] > 0  # its spend, recorded
    assert r["budget"]["max_budget_usd"] == 0.03
    assert asked < 7  # stopped before the script ran out


def test_max_tokens_stops_claude_from_the_stream(claude_env, queue, git_repo):
    job = queue.enqueue(prompt="Write the steps.", repo_url=git_repo,
                        config={**CONFIG, "max_turns": 10, "max_tokens": 30_000})
    with FakeAnthropic(_writes(claude_env, job["id"], 6)) as api:
        proc = run_one_job(claude_env, ANTHROPIC_BASE_URL=api.base_url, RUNNER_LEASE_SECONDS="180")
        asked = len(api.message_requests)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "failed", row["error"]
    assert row["error"].startswith("budget of 30,000 tokens reached after ")
    assert row["error"].endswith("tokens; the agent was stopped")
    assert row["result"]["usage"]["input_tokens"] >= 2400  # two turns at least, recorded
    assert asked < 7
