"""config.output_schema with the real Claude CLI against the loopback API: the answer the
model gives through the CLI's StructuredOutput tool ends in result.structured; no answer
is retried — the next attempt told why — and, with no attempts left, failed."""

from __future__ import annotations

import json

import pytest

from tests.agents.test_claude_cli import BIN, CONFIG, claude_env  # noqa: F401 - a fixture
from tests.conftest import run_one_job
from tests.fakes.anthropic_api import FakeAnthropic, text, tool_results, tool_use

pytestmark = [
    pytest.mark.claude_cli,
    pytest.mark.skipif(BIN is None, reason="the Claude Code CLI is not installed: run "
                       "tests/tools/install_claude.sh"),
]
SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["ok", "bad"]}},
          "required": ["verdict"], "additionalProperties": False}
STRUCTURED = {**CONFIG, "output_schema": SCHEMA}
TOLD = "structured output is missing"  # the runner's reason, as the next attempt reads it


def answering(valid_when):
    """A model that calls StructuredOutput: a valid answer when ``valid_when(body)``."""
    def responder(body):
        if tool_results(body):
            return text("Done.")
        verdict = "ok" if valid_when(body) else 3
        return tool_use("StructuredOutput", {"verdict": verdict})
    return responder


def _told(body) -> bool:
    return TOLD in json.dumps(body["messages"])


def test_a_conforming_answer_is_stored_in_result_structured(claude_env, queue, git_repo):
    job = queue.enqueue(prompt="Review it.", repo_url=git_repo, config=STRUCTURED)
    with FakeAnthropic(answering(lambda body: True)) as api:
        proc = run_one_job(claude_env, ANTHROPIC_BASE_URL=api.base_url)
        tools = {t["name"]: t for t in api.message_requests[0].body.get("tools", [])}
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["structured"] == {"verdict": "ok"}
    assert tools["StructuredOutput"]["input_schema"] == SCHEMA  # what --json-schema sent


def test_no_conforming_answer_is_retried_with_the_reason_and_then_succeeds(claude_env, queue, git_repo):
    job = queue.enqueue(prompt="Review it.", repo_url=git_repo, config=STRUCTURED, max_attempts=2)
    # Invalid answers until the prompt carries the runner's reason for the retry.
    with FakeAnthropic(answering(_told)) as api:
        env = {**claude_env, "ANTHROPIC_BASE_URL": api.base_url, "RUNNER_RETRY_BACKOFF_SECONDS": "0"}
        first = run_one_job(env)
        row = queue.get(job["id"])
        assert (row["status"], row["attempts"]) == ("queued", 1), first.stdout[-3000:]
        assert TOLD in row["error"]
        second = run_one_job(env)
    assert second.returncode == 0, second.stdout[-3000:]
    row = queue.get(job["id"])
    assert (row["status"], row["attempts"]) == ("succeeded", 2), row["error"]
    assert row["result"]["structured"] == {"verdict": "ok"}


def test_no_conforming_answer_in_any_attempt_ends_failed_with_a_sentence(claude_env, queue, git_repo):
    job = queue.enqueue(prompt="Review it.", repo_url=git_repo, config=STRUCTURED, max_attempts=1)
    with FakeAnthropic(answering(lambda body: False)) as api:
        proc = run_one_job(claude_env, ANTHROPIC_BASE_URL=api.base_url)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "failed" and "structured" not in row["result"]
    assert row["error"] == ("the agent's structured output is missing: config.output_schema asks for "
                            "an answer matching it (attempt 1 of 1; no attempts left)")
