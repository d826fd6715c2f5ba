"""runner/render.py on the REAL captured agent output (tests/fixtures/claude, codex)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.render import Renderer, key_argument

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def render(lines: list[str]) -> list[str]:
    r = Renderer()
    out = []
    for line in lines:
        out += r.line(line)
    return out + r.flush()


def render_fixture(agent: str, case: str) -> list[str]:
    return render((FIXTURES / agent / f"{case}.stdout.jsonl").read_text().splitlines())


# (agent, case, substrings that must appear, each on some rendered line)
CASES = [
    ("claude", "success_write_tool", [
        "claude  init model=claude-sonnet-4-5 cwd=/tmp/capture/repo tools=26",
        "claude  tool Write /tmp/capture/repo/hello.txt",
        "claude  text Wrote hello.txt.",
        "claude  result success is_error=false cost=$0.0457 tokens in=2400 out=84",
        "turns=2",
    ]),
    ("claude", "auth_401", [
        "api_retry attempt 1/2 status=401 error=authentication_failed",
        "api_retry attempt 2/2 status=401",
        "api error authentication_failed (401): Invalid API key",
        "result success is_error=true api_error_status=401 cost=$0.0000",
        "terminal_reason=api_error: Invalid API key · Fix external API key",
    ]),
    ("claude", "auth_401_first_retry", ["api_retry attempt 1/10 status=401"]),
    ("claude", "permission_denied", [
        "tool Bash touch /tmp/capture-should-not-exist",
        "permission denied Bash: touch in '/tmp/capture-should-not-exist' needs approval",
        "tool error: touch in '/tmp/capture-should-not-exist' needs approval",
        "permission_denials=1 (Bash)",
    ]),
    ("claude", "usage_limit_oauth_429", [
        "rate_limit status=rejected type=five_hour resets=",
        "api error rate_limit (429): You've hit your 5-hour limit",
    ]),
    ("claude", "rate_limit_warning_oauth_200", ["rate_limit status=allowed_warning type=five_hour utilization=0.9"]),
    ("claude", "max_turns", ["tool Write /tmp/capture/repo/a.txt",
                             'result error_max_turns is_error=true',
                             'errors=["Reached maximum number of turns (1)"]']),
    ("claude", "overloaded_529", ["api_retry attempt 1/2 status=529 error=overloaded"]),
    ("claude", "sigint_midstream", ["user [Request interrupted by user]", "result error_during_execution"]),
    ("codex", "success", ["codex   thread started", "codex   text Hello from the fake Responses API.",
                          "turn completed tokens in=1200 out=42 cached=800"]),
    ("codex", "auth_401", ["error: Reconnecting... 1/1 (unexpected status 401",
                           "turn FAILED: unexpected status 401 Unauthorized"]),
]


@pytest.mark.parametrize("agent,case,expected", CASES, ids=[f"{a}-{c}" for a, c, _ in CASES])
def test_real_captures_render_readably(agent, case, expected):
    out = render_fixture(agent, case)
    text = "\n".join(out)
    for piece in expected:
        assert piece in text, f"{piece!r} not in:\n{text}"
    # Every JSON line became something short and readable, not raw JSON.
    assert not any(line.lstrip().startswith("{") for line in out)


def test_every_capture_renders_without_raising():
    for path in sorted(FIXTURES.glob("*/*.stdout.jsonl")):
        render(path.read_text().splitlines())


def test_runner_lines_stderr_and_plain_text():
    lines = [
        json.dumps({"timestamp": "2026-01-02T03:04:05.678Z", "level": "info", "event": "job_claimed",
                    "worker_id": "w1", "job_id": "j", "attempt": 1, "repo_url": None,
                    "reason": "two words"}),
        "[agent stderr] error: unknown option '--no-such-flag'",
        "plain text from somewhere",
        '{"fake": "done"}',
        '[1, 2]',
        json.dumps({"timestamp": "2026-01-02T03:04:06Z", "level": "error", "event": "iteration_crashed",
                    "exception": "Traceback (most recent call last):\n  boom\nValueError: x"}),
    ]
    out = render(lines)
    assert out[0].endswith('info    job_claimed attempt=1 repo_url=null reason="two words"')
    assert out[0].startswith("03:04:05Z info")  # UTC, and it says so
    assert "worker_id" not in out[0]
    assert out[1] == "          [agent stderr] error: unknown option '--no-such-flag'"
    assert out[2] == "plain text from somewhere"
    assert out[3:5] == ['{"fake": "done"}', "[1, 2]"]
    assert "error   iteration_crashed" in out[5]
    assert out[-1].endswith("| ValueError: x")


def test_gemini_stream_json_and_unknown_events():
    lines = [json.dumps(e) for e in [
        {"type": "init", "timestamp": "t", "session_id": "s1", "model": "gemini-2.5-pro"},
        {"type": "message", "role": "user", "content": "the prompt"},
        {"type": "message", "role": "assistant", "content": "Hel", "delta": True},
        {"type": "message", "role": "assistant", "content": "lo.", "delta": True},
        {"type": "tool_use", "tool_name": "run_shell_command", "tool_id": "t1",
         "parameters": {"command": "ls -la"}},
        {"type": "tool_result", "tool_id": "t1", "status": "error", "output": "",
         "error": {"type": "x", "message": "denied"}},
        {"type": "error", "severity": "warning", "message": "loop detected"},
        {"type": "result", "status": "success",
         "stats": {"input_tokens": 10, "output_tokens": 5, "duration_ms": 1500, "tool_calls": 1}},
        {"type": "something_new", "x": 1},
    ]]
    text = "\n".join(render(lines))
    assert "gemini  init model=gemini-2.5-pro session=s1" in text
    assert "gemini  text Hello." in text
    assert "the prompt" not in text
    assert "gemini  tool run_shell_command ls -la" in text
    assert "gemini  tool error: denied" in text
    assert "gemini  warning: loop detected" in text
    assert "gemini  result success tokens in=10 out=5 duration=1.5s tool_calls=1" in text
    assert 'something_new {"type": "something_new", "x": 1}' in text


@pytest.mark.parametrize("name,args,shown", [
    ("Write", {"file_path": "/r/a.txt", "content": "x"}, "/r/a.txt"),
    ("Edit", {"file_path": "/r/b.py", "old_string": "a"}, "/r/b.py"),
    ("Read", {"file_path": "/r/c"}, "/r/c"),
    ("Bash", {"command": "pytest -q\n  -x", "description": "tests"}, "pytest -q -x"),
    ("Grep", {"pattern": "TODO", "path": "/r"}, "TODO"),
    ("Glob", {"pattern": "**/*.py"}, "**/*.py"),
    ("WebFetch", {"url": "https://example.com", "prompt": "p"}, "https://example.com"),
    ("mcp__db__query", {"limit": 3, "sql": "select 1"}, "select 1"),
    ("Odd", {}, ""),
])
def test_tool_calls_show_their_key_argument(name, args, shown):
    assert key_argument(name, args) == shown


def test_agent_lines_show_the_time_the_runner_read_them():
    lines = ["[agent 2026-01-02T03:04:07.250Z] " + json.dumps(
                 {"type": "assistant", "message": {"content": [{"type": "text", "text": "Hi."}]}}),
             "[agent stderr 2026-01-02T03:04:08.000Z] warning: slow"]
    out = render(lines)
    assert out[0].startswith("03:04:07Z claude  text Hi.")
    assert out[1] == "03:04:08Z [agent stderr] warning: slow"


def test_local_time_is_shown_with_its_offset(monkeypatch):
    from runner import clock

    monkeypatch.setenv("RUNNER_TIME_ZONE", "local")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    import time
    time.tzset()
    try:
        when = clock.datetime(2026, 1, 2, 3, 4, 5, tzinfo=clock.timezone.utc)
        assert clock.clock_time(when) == "04:04:05+0100"
        assert clock.date_time(when) == "2026-01-02 04:04:05+0100"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("stamp", ["2026-03-04T05:06:07.000001Z", "2026-03-04T23:59:59Z",
                                   "2026-03-04T05:06:07.5Z", "2026-03-04T24:00:00Z",
                                   "2026-03-04T05:06:07+01:00", "not a time"])
@pytest.mark.parametrize("zone", ["utc", "local"])
def test_the_fast_path_for_utc_stamps_shows_what_the_clock_shows(stamp, zone, monkeypatch):
    from datetime import datetime

    from runner.clock import clock_time
    from runner.render import hhmmss

    monkeypatch.setenv("RUNNER_TIME_ZONE", zone)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    try:
        expected = clock_time(datetime.fromisoformat(stamp))
    except ValueError:
        expected = None
    assert hhmmss(stamp) == expected


@pytest.mark.parametrize("raw", ['{"a": 1}', '{"a": 1}   ', '{"a": 1} x', '{"a": 1}{"b": 2}',
                                 '{"a": [1, 2', '{"a": NaN}', "{" * 100_000, '{"a": "\\ud800"}'])
def test_a_line_is_an_object_exactly_when_json_loads_says_so(raw):
    import json

    from runner.jsonl import json_event as _json_object

    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError):
        expected = None
    assert _json_object(raw) == expected


def _parsed(lines: list[str]) -> list[str]:
    """render() with the tool-result shortcut off: every line parsed."""
    r = Renderer()
    r._quiet_tool_results = lambda raw: False
    out = []
    for line in lines:
        out += r.line(line)
    return out + r.flush()


def _tool_results(*blocks: dict, spacing: tuple[str, str] = (",", ":")) -> str:
    return json.dumps({"type": "user", "message": {"role": "user", "content": list(blocks)},
                       "session_id": "s"}, separators=spacing, ensure_ascii=False)


QUIET = {"type": "tool_result", "tool_use_id": "t", "content": 'says "is_error":true and "type":"text"'}
ERROR = {"type": "tool_result", "tool_use_id": "t", "is_error": True, "content": "boom"}
TEXT = {"type": "text", "text": "please go on"}


@pytest.mark.parametrize("line", [
    _tool_results(QUIET),
    _tool_results(QUIET, ERROR),
    _tool_results({**QUIET, "is_error": False}, ERROR),
    _tool_results(QUIET, TEXT),
    _tool_results(ERROR, spacing=(", ", ": ")),
    _tool_results({**QUIET, "content": [TEXT]}),
    _tool_results(QUIET)[:-1],  # cut short
    "[agent 2026-11-20T23:02:35.804Z] " + _tool_results(ERROR),
    "[agent 2026-11-20T23:02:35.804Z] " + _tool_results(QUIET),
])
def test_tool_results_not_parsed_render_as_if_parsed(line):
    """Claude's tool results that show nothing are skipped unparsed; an error, a text block
    or an odd spelling still shows, exactly as parsing the line shows it."""
    first = (FIXTURES / "claude" / "success_write_tool.stdout.jsonl").read_text().splitlines()[:1]
    assert render(first + [line]) == _parsed(first + [line])
    assert render([line]) == _parsed([line])


def test_every_capture_renders_as_if_every_line_were_parsed():
    for path in sorted(FIXTURES.glob("*/*.stdout.jsonl")):
        lines = path.read_text().splitlines()
        assert render(lines) == _parsed(lines), path
