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


def test_progress_rows_appear_while_claude_works_each_announced(claude_env, queue, git_repo, db_url):
    """Three Write calls, then a final answer: while the CLI waits for that answer, the row
    already shows all three tool calls; every progress row was NOTIFYed; tokens grow."""
    import json

    import psycopg

    from tests.agents.proc import wait_for

    job = queue.enqueue(prompt="Write the steps.", repo_url=git_repo,
                        config={**CONFIG, "max_turns": 10})
    steps = _writes(claude_env, job["id"], 3)
    seen_while_running: dict = {}

    def responder(body):
        reply = steps(body)
        if reply.stop_reason != "tool_use":  # the last request: the CLI is waiting on us
            with psycopg.connect(db_url) as conn:
                def progress():
                    row = conn.execute("SELECT status, progress FROM jobs WHERE id = %s",
                                       (job["id"],)).fetchone()
                    return row if row[1] and row[1]["tool_calls"] == 3 \
                        and row[1]["tool"]["state"] == "done" else None
                seen_while_running["row"] = wait_for(progress, timeout=10, what="progress row")
        return reply

    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN runner_jobs")
        with FakeAnthropic(responder) as api:
            proc = run_one_job(claude_env, ANTHROPIC_BASE_URL=api.base_url,
                               RUNNER_LEASE_SECONDS="180")
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=1)]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert queue.get(job["id"])["status"] == "succeeded"
    status, snap = seen_while_running["row"]
    assert status == "running"
    assert snap["tool"]["name"] == "Write" and snap["tool"]["arg"].endswith("/work/step2.txt")
    assert snap["turns"] == 3 and snap["tokens"] > 0

    rows = [e["detail"] for e in queue.events(job["id"]) if e["event"] == "progress"]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("tool_start") == 3 and kinds.count("tool_end") == 3
    assert kinds[-1] == "result" and rows[-1]["cost_usd"] > 0
    assert rows[-1]["last_text"] == "All steps written."
    tokens = [r["tokens"] for r in rows if r["tokens"] is not None]
    assert tokens == sorted(tokens) and tokens[-1] > tokens[0]  # grows as it works
    announced = [n for n in notes if n["id"] == str(job["id"]) and n["event"] == "progress"]
    assert len(announced) == len(rows)
    assert queue.get(job["id"])["progress"]["kind"] == "result"  # the latest snapshot
