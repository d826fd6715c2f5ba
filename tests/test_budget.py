"""Issue 13, item 3: budgets. The job's max_budget_usd / max_tokens, the operator's ceiling,
and the runner stopping an agent from its stream (a fake agent shaped like Claude Code)."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from runner import budget
from runner.errors import InvalidAgentConfig
from runner.jobconfig import parse
from runner.settings import load_settings
from tests.agents.proc import alive, pid_in
from tests.conftest import FAKES, fake, run_one_job

USAGE = {"input_tokens": 1200, "cache_creation_input_tokens": 4000,
         "cache_read_input_tokens": 12000, "output_tokens": 42}  # 17,242 tokens a message


def _settings(**kw):
    return load_settings(database_url="postgresql://x@127.0.0.1/none", **kw)


def test_the_operator_ceiling_clamps_what_a_job_asks_and_is_the_default():
    capped = _settings(max_budget_usd=2.0)
    assert budget.limits(parse({"max_budget_usd": 5}), capped) == budget.Limits(None, 2.0, asked_usd=5.0)
    assert budget.limits(parse({"max_budget_usd": 0.5}), capped) == budget.Limits(None, 0.5)
    assert budget.limits(parse({}), capped) == budget.Limits(None, 2.0)
    assert budget.limits(parse({"max_tokens": 900}), _settings()) == budget.Limits(900, None)
    described = budget.limits(parse({"max_budget_usd": 5}), capped).describe()
    assert described["asked_usd"] == 5.0 and described["clamped_by"] == "RUNNER_MAX_BUDGET_USD"


@pytest.mark.parametrize("config, words", [
    ({"max_budget_usd": "5"}, "config.max_budget_usd must be a number of US dollars"),
    ({"max_budget_usd": 0}, "above 0 and at most 10000, got 0"),
    ({"max_budget_usd": 20_000}, "at most 10000, got 20000"),
    ({"max_budget_usd": True}, "config.max_budget_usd"),
    ({"max_tokens": 1.5}, "config.max_tokens must be a whole number from 1 to"),
    ({"max_tokens": -3}, "from 1 to 1000000000"),
])
def test_a_bad_budget_is_a_sentence(config, words):
    # The typed config refuses it before any budget is worked out (runner.jobconfig).
    with pytest.raises(InvalidAgentConfig, match=words):
        parse(config)


def test_spend_and_the_sentences():
    claude = budget.spend_of({"usage": USAGE, "cost_usd": 0.0229})
    assert claude == budget.Spend(17242, 0.0229)
    codex = budget.spend_of({"usage": {"input_tokens": 100, "cached_input_tokens": 80,
                                       "output_tokens": 5}})
    assert codex.tokens == 105  # cached input is part of the input, not more
    assert budget.spend_of({"usage": {"total_tokens": 77, "input_tokens": 70}}).tokens == 77
    lim = budget.Limits(max_tokens=10_000, max_budget_usd=0.02)
    assert budget.reached(lim, claude) == "budget of 10,000 tokens reached after 17,242 tokens"
    assert budget.reached(budget.Limits(max_budget_usd=0.02), claude) == \
        "budget of $0.02 reached after $0.0229"
    assert budget.reached(lim, budget.Spend(9_999, 0.01)) is None


@pytest.fixture
def fake_claude(tmp_path, runner_env):
    """The fake agent behind the claude adapter (its stream reader, its argv)."""
    script = tmp_path / "claude"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'argv.txt'}\n"
                      f"exec {sys.executable} {FAKES / 'fake_agent.py'}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {**runner_env, "RUNNER_CLAUDE_BIN": str(script), "RUNNER_DEFAULT_AGENT": "claude",
            "RUNNER_LEASE_SECONDS": "180"}


def _assistant(n: int) -> str:
    return json.dumps({"type": "assistant", "message": {
        "id": f"msg_{n}", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": f"step {n}"}], "usage": USAGE}})


def test_max_tokens_stops_the_agent_and_the_job_fails_with_its_spend(fake_claude, queue, git_repo,
                                                                       tmp_path):
    pidfile = tmp_path / "agent.pid"
    # The file first, then the messages (then_stdout): the runner stops the agent the
    # moment the second one is read, and the file must be there by then.
    config = {**fake(then_stdout=[_assistant(1), _assistant(2), _assistant(3)], then_sleep=120,
                     pidfile=str(pidfile), write={"half-done.txt": "work in progress\n"}),
              "agent": "claude", "max_tokens": 30_000}
    job = queue.enqueue(prompt="work", repo_url=git_repo, config=config)
    proc = run_one_job(fake_claude, timeout=60)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    row = queue.get(job["id"])
    assert row["status"] == "failed"
    assert row["error"] == ("budget of 30,000 tokens reached after 34,484 tokens; "
                            "the agent was stopped")
    assert row["result"]["usage"]["input_tokens"] == 2400  # two messages' worth: its spend
    assert row["result"]["budget"]["reached"].startswith("budget of 30,000 tokens")
    assert not alive(pid_in(pidfile))
    # Its work is kept: a failed job's worktree stays for a person (and the next attempt).
    assert (tmp_path / "jobs" / str(job["id"]) / "work" / "half-done.txt").exists()


def test_the_clamped_dollar_budget_reaches_claude_as_its_flag(fake_claude, queue, git_repo, tmp_path):
    job = queue.enqueue(prompt="work", repo_url=git_repo,
                        config={**fake(), "agent": "claude", "max_budget_usd": 5})
    proc = run_one_job(fake_claude, RUNNER_MAX_BUDGET_USD="0.25")
    assert proc.returncode == 0, proc.stdout[-3000:]
    argv = (tmp_path / "argv.txt").read_text().split()
    assert argv[argv.index("--max-budget-usd") + 1] == "0.25"
    assert '"event": "budget_clamped"' in proc.stdout and '"asked_usd": 5.0' in proc.stdout
    # The row says what the job may spend, and that the operator's ceiling cut it.
    assert queue.get(job["id"])["result"]["budget"] == {
        "max_tokens": None, "max_budget_usd": 0.25, "asked_usd": 5.0,
        "clamped_by": "RUNNER_MAX_BUDGET_USD"}
