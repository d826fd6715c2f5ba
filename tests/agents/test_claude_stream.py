"""The Claude stream classifier, on real Claude Code 2.1.329 output.

The fixtures under tests/fixtures/claude/ were captured by the claude-cli branch
(tests/fixtures/claude/capture.py, README.md there): the real CLI run against the loopback
fake API. Each case is replayed line by line as run_agent would feed it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from runner.agents.claude import ClaudeReader
from runner.outcome import Verdict
from tests.agents.conftest import FIXTURES, capture, replay

# case → (verdict, stopped early, words the reason must contain)
CASES = {
    "success_text": (Verdict.SUCCEEDED, False, None),
    "success_write_tool": (Verdict.SUCCEEDED, False, None),
    "permission_denied": (Verdict.SUCCEEDED, False, None),
    "rate_limit_warning_200": (Verdict.SUCCEEDED, False, None),
    "rate_limit_warning_oauth_200": (Verdict.SUCCEEDED, False, None),
    # The reader's own verdict; runner/structured.py then checks the answer (test_structured.py).
    "structured_output_ok": (Verdict.SUCCEEDED, False, None),
    "structured_output_invalid": (Verdict.SUCCEEDED, False, None),
    "auth_401": (Verdict.TOKEN_EXPIRED, True, "HTTP 401 authentication_failed"),
    "auth_401_first_retry": (Verdict.TOKEN_EXPIRED, True, "first retry"),
    "auth_401_oauth": (Verdict.TOKEN_EXPIRED, True, "credentials were rejected"),
    "usage_limit_oauth_429": (Verdict.USAGE_LIMIT, True, "five_hour"),
    "rate_limit_429": (Verdict.OVERLOADED, False, "HTTP 429"),
    "overloaded_529": (Verdict.OVERLOADED, False, "HTTP 529"),
    "server_error_500": (Verdict.OVERLOADED, False, "HTTP 500"),
    "max_turns": (Verdict.RETRY, False, "Reached maximum number of turns (1)"),
    "sigint_midstream": (Verdict.RETRY, False, "error_during_execution"),
    "sigterm_midstream": (Verdict.RETRY, False, "code 143 without a result"),
    "unknown_flag": (Verdict.RETRY, False, "unknown option '--no-such-flag'"),
}


def _exit_code(case: str) -> int:
    return json.loads((FIXTURES / "claude" / f"{case}.meta.json").read_text())["exit_code"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_captured_runs(case: str) -> None:
    verdict, early, words = CASES[case]
    out, err = capture("claude", case)
    outcome, stopped = replay(ClaudeReader(), out, _exit_code(case), err)
    assert (outcome.verdict, stopped) == (verdict, early), outcome.reason
    if words:
        assert words in outcome.reason
    if verdict is Verdict.SUCCEEDED:
        assert outcome.reason is None


def test_success_result_fields() -> None:
    out, _ = capture("claude", "success_write_tool")
    outcome, _ = replay(ClaudeReader(), out, 0)
    r = outcome.result
    assert r["summary"] == "Wrote hello.txt."
    assert r["cost_usd"] == pytest.approx(0.04566)
    assert r["usage"] == {"input_tokens": 2400, "output_tokens": 84,
                          "cache_creation_input_tokens": 8000, "cache_read_input_tokens": 24000}
    assert r["turns"] == 2 and r["model"] == "claude-sonnet-4-5" and r["exit_code"] == 0
    assert r["session_id"] and r["permission_denials"] == []


def test_permission_denials_are_kept() -> None:
    out, _ = capture("claude", "permission_denied")
    outcome, _ = replay(ClaudeReader(), out, 0)
    assert [d["tool_name"] for d in outcome.result["permission_denials"]] == ["Bash"]


def test_usage_limit_reset_comes_from_the_event() -> None:
    out, _ = capture("claude", "usage_limit_oauth_429")
    event = next(json.loads(line) for line in out if '"rate_limit_event"' in line)
    outcome, _ = replay(ClaudeReader(), out, 1)
    assert outcome.reset_at == datetime.fromtimestamp(event["rate_limit_info"]["resetsAt"], timezone.utc)


def _without(lines: list[str], kind: str) -> list[str]:
    return [line for line in lines if f'"{kind}"' not in line]


def test_401_result_without_retries_is_token_expiry() -> None:
    """CLAUDE_CODE_MAX_RETRIES=0: no api_retry line; the result alone must say it."""
    out, _ = capture("claude", "auth_401_oauth")
    outcome, stopped = replay(ClaudeReader(), _without(out, "api_retry"), 1)
    assert (outcome.verdict, stopped) == (Verdict.TOKEN_EXPIRED, False)
    assert "OAuth token has expired" in outcome.reason


def test_usage_limit_from_the_result_alone() -> None:
    out, _ = capture("claude", "usage_limit_oauth_429")
    outcome, stopped = replay(ClaudeReader(), _without(out, "rate_limit_event"), 1)
    assert (outcome.verdict, stopped) == (Verdict.USAGE_LIMIT, False)
    assert outcome.reset_at is not None


def _result(**fields) -> str:
    base = {"type": "result", "subtype": "success", "is_error": False, "result": "done",
            "num_turns": 1, "total_cost_usd": 0.01, "session_id": "s"}
    return json.dumps({**base, **fields})


@pytest.mark.parametrize("text, verdict", [
    # A successful run that merely talks about credentials or limits succeeded.
    ("I fixed the 'Invalid API key' message and the usage limit reached|123 parser.", Verdict.SUCCEEDED),
    ("Please run /login is now shown when the OAuth token has expired.", Verdict.SUCCEEDED),
])
def test_success_text_mentioning_errors_is_success(text: str, verdict: Verdict) -> None:
    outcome, _ = replay(ClaudeReader(), [_result(result=text)], 0)
    assert outcome.verdict is verdict


@pytest.mark.parametrize("text", [
    "Invalid API key · Please run /login",
    "Failed to authenticate. API Error: 401 OAuth token has expired. Please obtain a new token.",
    "Please run /login · API Error: 401",
])
def test_error_text_of_rejected_credentials(text: str) -> None:
    outcome, _ = replay(ClaudeReader(), [_result(is_error=True, result=text)], 1)
    assert outcome.verdict is Verdict.TOKEN_EXPIRED


def test_older_usage_limit_text_with_epoch() -> None:
    outcome, _ = replay(ClaudeReader(), [_result(is_error=True, result="Claude AI usage limit reached|1763686800")], 1)
    assert outcome.verdict is Verdict.USAGE_LIMIT
    assert outcome.reset_at == datetime.fromtimestamp(1763686800, timezone.utc)


def test_budget_and_no_result() -> None:
    outcome, _ = replay(ClaudeReader(), [_result(is_error=True, subtype="error_max_budget_usd",
                                                 result=None, errors=["Reached maximum budget ($1)"])], 1)
    assert outcome.verdict is Verdict.RETRY and "budget" in outcome.reason
    outcome, _ = replay(ClaudeReader(), ["not json at all"], 1, ["boom: something broke"])
    assert outcome.verdict is Verdict.RETRY and "boom: something broke" in outcome.reason


def test_old_cli_printing_auth_error_on_stderr() -> None:
    outcome, _ = replay(ClaudeReader(), [], 1, ["Invalid API key · Please run /login"])
    assert outcome.verdict is Verdict.TOKEN_EXPIRED


def test_other_retries_and_warnings_do_not_stop_early() -> None:
    reader = ClaudeReader()
    reader.feed("stdout", json.dumps({"type": "system", "subtype": "api_retry", "attempt": 1,
                                      "error_status": 529, "error": "overloaded"}))
    reader.feed("stdout", json.dumps({"type": "rate_limit_event", "rate_limit_info": {
        "status": "rejected", "resetsAt": 1763686800, "isUsingOverage": True}}))
    reader.feed("stdout", json.dumps({"type": "rate_limit_event", "rate_limit_info": {
        "status": "allowed_warning", "resetsAt": 1763686800}}))
    reader.feed("stderr", "Invalid API key")  # stderr alone never stops a run early
