"""runner/structured.py: the agent's structured answer, checked by the runner itself
against config.output_schema — on real Claude Code output and on values made up here."""

from __future__ import annotations

import pytest

from runner import jobconfig, structured
from runner.agents.claude import ClaudeReader
from runner.agents.codex import CodexReader
from runner.errors import InvalidAgentConfig
from runner.outcome import Outcome, Verdict
from tests.agents.conftest import capture, replay

SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["ok", "bad"]}},
          "required": ["verdict"]}  # the schema the fixtures were captured with


class Answer:
    def __init__(self, value=structured.MISSING):
        self.structured_output = value


def _check(value, schema=SCHEMA):
    return structured.check(Outcome(Verdict.SUCCEEDED, result={"summary": "s"}), schema, Answer(value))


def test_a_conforming_claude_answer_is_stored_in_result_structured():
    reader = ClaudeReader()
    outcome, _ = replay(reader, capture("claude", "structured_output_ok")[0], 0)
    outcome = structured.check(outcome, SCHEMA, reader)
    assert outcome.verdict is Verdict.SUCCEEDED and outcome.result["structured"] == {"verdict": "ok"}


def test_a_claude_run_that_never_met_the_schema_is_retried_though_the_cli_says_success():
    reader = ClaudeReader()
    outcome, _ = replay(reader, capture("claude", "structured_output_invalid")[0], 0)
    assert outcome.verdict is Verdict.SUCCEEDED  # the CLI's own word
    outcome = structured.check(outcome, SCHEMA, reader)
    assert outcome.verdict is Verdict.RETRY and "structured" not in outcome.result
    assert outcome.reason == ("the agent's structured output is missing: config.output_schema asks "
                              "for an answer matching it")


def test_an_answer_the_cli_claims_valid_is_checked_again():
    outcome = _check({"verdict": 3, "extra": True})
    assert outcome.verdict is Verdict.RETRY
    assert outcome.reason.startswith("the agent's structured output does not match "
                                     "config.output_schema: at /verdict: ")
    assert "3 is not of type 'string'" in outcome.reason and "3 is not one of ['ok', 'bad']" in outcome.reason


def test_the_reason_names_the_place_in_the_document_and_what_was_expected():
    schema = {"type": "object", "required": ["items"],
              "properties": {"items": {"type": "array", "items": {"type": "integer"}}}}
    assert _check({"items": [1, "two"]}, schema).reason.endswith(
        "at /items/1: 'two' is not of type 'integer'")
    assert _check([], schema).reason.endswith("at the document root: [] is not of type 'object'")
    assert "at the document root: 'items' is a required property" in _check({}, schema).reason
    many = _check({"items": ["a", "b", "c", "d", "e"]}, schema).reason
    assert many.endswith("(and 2 more)") and len(many) < 500  # fits the next attempt's note


def test_a_null_answer_is_an_answer_and_other_verdicts_are_left_alone():
    assert _check(None, {"type": "null"}).result["structured"] is None
    failed = Outcome(Verdict.FAILED, reason="no")
    assert structured.check(failed, SCHEMA, Answer()) is failed
    assert structured.check(Outcome(Verdict.SUCCEEDED), None, Answer()).verdict is Verdict.SUCCEEDED


def test_an_oversized_answer_is_not_kept():
    outcome = _check({"verdict": "ok", "pad": "x" * (structured.MAX_STRUCTURED_BYTES + 1)})
    assert outcome.verdict is Verdict.RETRY and "bytes of JSON; at most 65536 are kept" in outcome.reason


def test_codex_answers_with_its_last_message_as_json():
    reader = CodexReader()
    reader.summary = '{"verdict": "ok"}'
    assert reader.structured_output == {"verdict": "ok"}
    reader.summary = "Done, the verdict is ok."
    assert reader.structured_output is structured.MISSING


@pytest.mark.parametrize("config, words", [
    ({"output_schema": {"type": "object", "properties": {"a": {"type": "strin"}}}},
     "config.output_schema is not a valid JSON Schema: 'strin' is not valid under any of the "
     "given schemas (at /properties/a/type)"),
    ({"agent": "gemini", "output_schema": SCHEMA}, "config.output_schema is not supported for agent 'gemini'"),
    ({"agent": "command", "output_schema": SCHEMA}, "config.output_schema is not supported for agent 'command'"),
])
def test_a_schema_that_cannot_be_met_is_refused_with_a_sentence(config, words):
    with pytest.raises(InvalidAgentConfig) as exc:
        jobconfig.parse(config)
    assert str(exc.value) == words
