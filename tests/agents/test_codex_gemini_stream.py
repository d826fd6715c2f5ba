"""The Codex and Gemini stream classifiers.

Real captures (see tests/fixtures/README.md): codex/success and codex/auth_401 from the
claude-cli branch; codex/auth_401_five_retries, codex/usage_limit_429 and all of gemini/
captured for this branch against small loopback fakes. The *_documented files are built
from the documented event shapes, not captured.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from runner.agents.codex import CodexReader
from runner.agents.gemini import GeminiReader
from runner.outcome import Verdict
from tests.agents.conftest import capture, replay

CODEX = {
    "success": (0, Verdict.SUCCEEDED, False),
    "success_documented": (0, Verdict.SUCCEEDED, False),
    "reconnect_then_success_documented": (0, Verdict.SUCCEEDED, False),
    "auth_401": (1, Verdict.TOKEN_EXPIRED, True),
    "auth_401_five_retries": (1, Verdict.TOKEN_EXPIRED, True),
    "usage_limit_429": (1, Verdict.USAGE_LIMIT, True),
}


@pytest.mark.parametrize("case", sorted(CODEX))
def test_codex_captures(case: str) -> None:
    code, verdict, early = CODEX[case]
    out, err = capture("codex", case)
    outcome, stopped = replay(CodexReader(), out, code, err)
    assert (outcome.verdict, stopped) == (verdict, early), outcome.reason


def test_codex_result_and_reset() -> None:
    outcome, _ = replay(CodexReader(), capture("codex", "success")[0], 0)
    assert outcome.result["summary"] == "Hello from the fake Responses API."
    assert outcome.result["usage"]["input_tokens"] == 1200 and outcome.result["turns"] == 1
    assert outcome.result["session_id"] == "01a1fb34-bb97-72c1-ac11-de0f217aba1b"
    outcome, _ = replay(CodexReader(), capture("codex", "usage_limit_429")[0], 1)
    assert outcome.reset_at == datetime(2026, 11, 21, 1, 4).astimezone()


def test_codex_failures_without_signals() -> None:
    failed = ['{"type":"turn.started"}', '{"type":"turn.failed","error":{"message":"context window exceeded"}}']
    outcome, _ = replay(CodexReader(), failed, 1)
    assert outcome.verdict is Verdict.RETRY and "context window exceeded" in outcome.reason
    outcome, _ = replay(CodexReader(), ['{"type":"turn.started"}'], 1, ["Error: no such model"])
    assert outcome.verdict is Verdict.RETRY and "without finishing its turn: Error: no such model" in outcome.reason
    # a completed turn but a non-zero exit is not a success
    outcome, _ = replay(CodexReader(), capture("codex", "success")[0], 2)
    assert outcome.verdict is Verdict.RETRY


GEMINI = {
    "success_text": (0, Verdict.SUCCEEDED),
    "auth_invalid_key_400": (144, Verdict.TOKEN_EXPIRED),
    "quota_429": (173, Verdict.USAGE_LIMIT),
}


@pytest.mark.parametrize("case", sorted(GEMINI))
def test_gemini_captures(case: str) -> None:
    code, verdict = GEMINI[case]
    out, err = capture("gemini", case)
    outcome, stopped = replay(GeminiReader(), out, code, err)
    assert (outcome.verdict, stopped) == (verdict, False), outcome.reason


def test_gemini_result_fields() -> None:
    outcome, _ = replay(GeminiReader(), capture("gemini", "success_text")[0], 0)
    r = outcome.result
    assert r["summary"] == "Hello from the fake Gemini." and r["model"] == "gemini-2.5-flash"
    assert r["usage"] == {"input_tokens": 1000, "output_tokens": 7, "total_tokens": 1007, "cached": 0}


@pytest.mark.parametrize("code, stderr, verdict, words", [
    (41, ["Invalid auth method selected."], Verdict.TOKEN_EXPIRED, "Invalid auth method"),
    (53, ["Reached max session turns"], Verdict.RETRY, "turn limit"),
    (42, ["bad input"], Verdict.FAILED, "rejected its input"),
    (55, ["Gemini CLI is not running in a trusted directory."], Verdict.RETRY, "trusted directory"),
])
def test_gemini_exit_codes(code: int, stderr: list[str], verdict: Verdict, words: str) -> None:
    outcome, _ = replay(GeminiReader(), [], code, stderr)
    assert outcome.verdict is verdict and words in outcome.reason
