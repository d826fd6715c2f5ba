"""Structured results: ``config.output_schema`` → the agent's answer as a JSON value,
checked by the runner itself and stored in ``result.structured``.

The agent's CLI is given the schema (Claude Code: ``--json-schema``, whose answer is the
result event's ``structured_output``; Codex: ``--output-schema FILE``, whose answer is its
last message) and may check it too, but nothing the agent prints is trusted: the runner
validates the value with ``jsonschema`` against the job's schema. A missing, invalid or
oversized answer is a ``RETRY`` whose reason names the place in the document and what was
expected; the next attempt is told it (runner/continuation.py: "The earlier attempt ended
with: …"), and the last one ends ``failed`` with it.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema.validators import validator_for

from runner.outcome import Outcome, Verdict

# Stands for "the agent gave no structured answer" (a JSON null may be a valid answer).
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
MAX_STRUCTURED_BYTES = 64 * 1024  # of the answer as JSON; result.structured is a row field
MAX_ERRORS = 3  # named in the reason (the next attempt's prompt has room for ~500 chars)


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a JSON Schema its draft accepts, or None (for jobconfig)."""
    try:
        validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        return f"{exc.message[:200]} (at {_where(exc.absolute_path)})"
    return None


def check(outcome: Outcome, schema: dict[str, Any] | None, reader: Any) -> Outcome:
    """A succeeded run of a job with an output schema keeps its verdict only with a valid
    answer, which goes into ``result.structured``; otherwise it is retried."""
    if schema is None or outcome.verdict is not Verdict.SUCCEEDED:
        return outcome
    value = getattr(reader, "structured_output", MISSING)
    problem = _problem(schema, value)
    if problem is not None:
        return Outcome(Verdict.RETRY, result=outcome.result,
                       reason=f"the agent's structured output {problem}")
    outcome.result["structured"] = value
    return outcome


def _problem(schema: dict[str, Any], value: Any) -> str | None:
    if value is MISSING:
        return "is missing: config.output_schema asks for an answer matching it"
    size = len(json.dumps(value, ensure_ascii=False))
    if size > MAX_STRUCTURED_BYTES:
        return f"is {size} bytes of JSON; at most {MAX_STRUCTURED_BYTES} are kept"
    validator = validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return None
    said = "; ".join(f"at {_where(e.absolute_path)}: {_short(e.message)}" for e in errors[:MAX_ERRORS])
    more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
    return f"does not match config.output_schema: {said}{more}"


def _where(path: Any) -> str:
    """A JSON Pointer to the place in the document (RFC 6901), or "the document root"."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else "the document root"


def _short(message: str, limit: int = 160) -> str:
    return message if len(message) <= limit else message[:limit - 1] + "…"
