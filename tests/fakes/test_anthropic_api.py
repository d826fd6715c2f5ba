"""Tests of the fake Anthropic API, plus one run of the real Claude Code CLI against it."""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path

import pytest

from tests.fakes.anthropic_api import (
    REDACTED,
    FakeAnthropic,
    error,
    rate_limit_headers,
    script,
    slow_text,
    system_text,
    text,
    tool_then_text,
    tool_use,
)
from tests.tools.claude_bin import claude_bin
from tests.tools.claude_run import claude_argv, claude_env, make_git_repo


def _post(api: FakeAnthropic, body: dict, headers: dict | None = None,
          path: str = "/v1/messages?beta=true") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request("POST", path, body=json.dumps(body),
                 headers={"content-type": "application/json", "x-api-key": "sk-test-secret",
                          **(headers or {})})
    return conn.getresponse()


def _stream_body(**extra) -> dict:
    return {"model": "claude-test", "max_tokens": 100, "stream": True,
            "system": [{"type": "text", "text": "You are a test."},
                       {"type": "text", "text": "RULES-MARKER"}],
            "messages": [{"role": "user", "content": "hi"}], **extra}


def _parse_sse(raw: str) -> list[tuple[str, dict]]:
    """Strict SSE framing: blocks separated by a blank line, each `event:` then `data:`."""
    assert raw.endswith("\n\n"), "stream must end with a complete event"
    events = []
    for block in raw[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2, block
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0][len("event: "):], json.loads(lines[1][len("data: "):])
        assert data["type"] == name
        events.append((name, data))
    return events


def test_head_root_and_unknown_paths():
    with FakeAnthropic() as api:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        conn.request("HEAD", "/")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        conn.request("GET", "/v1/nothing")
        r = conn.getresponse()
        assert r.status == 404
        assert json.loads(r.read())["error"]["type"] == "not_found_error"
        r = _post(api, {}, path="/v1/other")
        assert r.status == 404
        r.read()
        assert [q.method for q in api.requests] == ["HEAD", "GET", "POST"]
        assert api.message_requests == []


def test_text_stream_framing_and_usage():
    with FakeAnthropic(text("Hello there, world")) as api:
        r = _post(api, _stream_body())
        assert r.status == 200
        assert r.getheader("content-type").startswith("text/event-stream")
        events = _parse_sse(r.read().decode())
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    start = events[0][1]["message"]
    assert start["model"] == "claude-test" and start["usage"]["input_tokens"] > 0
    assert start["usage"]["cache_read_input_tokens"] > 0
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == "Hello there, world"
    end = dict(events)["message_delta"]
    assert end["delta"]["stop_reason"] == "end_turn" and end["usage"]["output_tokens"] > 0


def test_tool_use_stream_parses():
    inp = {"file_path": "/tmp/x/hello.txt", "content": "line one\n\"quoted\"\n"}
    with FakeAnthropic(tool_use("Write", inp, preamble="Writing it.")) as api:
        events = _parse_sse(_post(api, _stream_body()).read().decode())
    starts = {d["index"]: d["content_block"] for n, d in events if n == "content_block_start"}
    assert starts[0]["type"] == "text" and starts[1]["type"] == "tool_use"
    assert starts[1]["name"] == "Write" and starts[1]["id"].startswith("toolu_")
    partial = "".join(d["delta"]["partial_json"] for n, d in events
                      if n == "content_block_delta" and d["index"] == 1)
    assert all(d["delta"]["type"] == "input_json_delta" for n, d in events
               if n == "content_block_delta" and d["index"] == 1)
    assert json.loads(partial) == inp
    assert dict(events)["message_delta"]["delta"]["stop_reason"] == "tool_use"


def test_non_stream_json_reply():
    with FakeAnthropic(text("plain")) as api:
        r = _post(api, _stream_body(stream=False))
        msg = json.loads(r.read())
    assert r.status == 200
    assert msg["type"] == "message" and msg["content"] == [{"type": "text", "text": "plain"}]
    assert msg["stop_reason"] == "end_turn" and msg["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("status,etype", [(401, "authentication_error"), (429, "rate_limit_error"),
                                          (529, "overloaded_error"), (500, "api_error")])
def test_errors_return_status_and_type(status, etype):
    with FakeAnthropic(error(status)) as api:
        r = _post(api, _stream_body())
        body = json.loads(r.read())
    assert r.status == status
    assert body["type"] == "error" and body["error"]["type"] == etype and body["error"]["message"]
    assert api.requests[0].status == status


def test_rate_limit_headers_are_sent():
    hdrs = rate_limit_headers("rejected", 1_900_000_000)
    with FakeAnthropic(error(429, headers=hdrs, retry_after=3)) as api:
        r = _post(api, _stream_body())
        r.read()
    assert r.getheader("anthropic-ratelimit-unified-status") == "rejected"
    assert r.getheader("anthropic-ratelimit-unified-reset") == "1900000000"
    assert r.getheader("retry-after") == "3"


def test_requests_recorded_with_secrets_redacted():
    with FakeAnthropic(text("ok")) as api:
        _post(api, _stream_body(), headers={"authorization": "Bearer tok"}).read()
        (req,) = api.message_requests
    assert req.query == {"beta": ["true"]}
    assert req.headers["x-api-key"] == REDACTED and req.headers["authorization"] == REDACTED
    assert "sk-test-secret" not in json.dumps(req.headers)
    assert "RULES-MARKER" in system_text(req.body)


def test_tool_then_text_follows_the_conversation():
    responder = tool_then_text("Write", {"file_path": "/x", "content": "y"}, "all done")
    first = responder({"messages": [{"role": "user", "content": "go"}]})
    assert first.stop_reason == "tool_use"
    second = responder({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]})
    assert second.content == [{"type": "text", "text": "all done"}]


def test_script_repeats_last_and_slow_stream_survives_client_going_away():
    with FakeAnthropic(script(slow_text(1000, 0.05), text("after"))) as api:
        r = _post(api, _stream_body())
        assert r.status == 200
        first = r.fp.readline()  # the chunk-size line of the first event
        assert first.strip()
        r.close()  # hang up mid-stream, like a killed CLI
        assert api.wait_for(lambda rs: len(rs) == 1)
        for _ in range(2):  # the server keeps serving; the script's last reply repeats
            events = _parse_sse(_post(api, _stream_body()).read().decode())
            assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "after"


def test_broken_responder_becomes_a_500():
    def boom(body):
        raise RuntimeError("bug in test")

    with FakeAnthropic(boom) as api:
        r = _post(api, _stream_body())
        r.read()
    assert r.status == 500 and api.responder_errors


@pytest.mark.claude_cli
def test_real_claude_cli_writes_a_file(tmp_path: Path):
    binary = claude_bin()
    if binary is None:
        pytest.skip("Claude Code CLI not installed: run tests/tools/install_claude.sh "
                    "or set RUNNER_TEST_CLAUDE_BIN")
    repo = make_git_repo(tmp_path / "repo")
    home = tmp_path / "home"
    home.mkdir()
    target = repo / "notes" / "hello.txt"
    content = "written by the real CLI\nsecond line\n"
    with FakeAnthropic(tool_then_text("Write", {"file_path": str(target), "content": content},
                                      "Created the file.")) as api:
        proc = subprocess.run(
            claude_argv(binary, "Create notes/hello.txt.", allowed_tools=["Write"],
                        extra=["--append-system-prompt", "RULES-MARKER-TEST"]),
            cwd=repo, env=claude_env(home, api.base_url), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=180)
        requests = api.message_requests
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == content
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    result = events[-1]
    assert result["type"] == "result" and result["subtype"] == "success"
    assert result["is_error"] is False and result["result"] == "Created the file."
    assert result["total_cost_usd"] > 0 and result["permission_denials"] == []
    assert len(requests) == 2
    assert "RULES-MARKER-TEST" in system_text(requests[0].body)
    tool_result = requests[1].body["messages"][-1]["content"]
    assert any(b.get("type") == "tool_result" and not b.get("is_error") for b in tool_result)
