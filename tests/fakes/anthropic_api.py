"""A loopback fake of the Anthropic Messages API, as the Claude Code CLI uses it.

Stdlib only. Serves on 127.0.0.1 (port 0 = any free port) in a background thread:

- ``POST /v1/messages`` (the CLI adds ``?beta=true``): answers with server-sent events when
  the body says ``"stream": true`` (``message_start``, ``content_block_start`` /
  ``content_block_delta`` / ``content_block_stop`` for text and ``tool_use`` blocks,
  ``message_delta`` with usage and stop_reason, ``message_stop``), with one JSON message
  otherwise;
- ``POST /v1/messages/count_tokens``: a rough token count;
- ``GET /v1/models`` (the runner's cost-free credential check): 401 when the request's
  ``x-api-key`` or bearer token is in :attr:`FakeAnthropic.rejected_credentials`, or when
  no credential is given; 200 with a model list otherwise;
- ``HEAD /`` (the CLI's start-up probe) and ``GET /``: 200;
- anything else: a 404 in the API's error shape.

What to answer is decided per test by a *responder*: a callable that takes the parsed
request body (a dict) and returns a :class:`Reply` built with :func:`text`,
:func:`tool_use`, :func:`error` or :func:`slow_text`. Every request is recorded
(:attr:`FakeAnthropic.requests`) with credentials redacted.

    with FakeAnthropic(tool_then_text("Write", {"file_path": p, "content": "hi"}, "done")) as api:
        env["ANTHROPIC_BASE_URL"] = api.base_url
        ...
        assert "RULES-MARKER" in system_text(api.message_requests[0].body)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "Responder",
    "error",
    "last_user_content",
    "rate_limit_headers",
    "script",
    "slow_text",
    "system_text",
    "text",
    "tool_results",
    "tool_then_text",
    "tool_use",
]

REDACTED = "<redacted>"
SECRET_HEADERS = {"x-api-key", "authorization", "proxy-authorization", "cookie"}

# Usage numbers shaped like a real Claude Code turn: a big, mostly cached system prompt.
DEFAULT_USAGE = {
    "input_tokens": 1200,
    "cache_creation_input_tokens": 4000,
    "cache_read_input_tokens": 12000,
    "output_tokens": 42,
}


# --------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """One answer to one request.

    A success (``status`` 200) carries ``content`` blocks (as the API returns them, with
    ``tool_use.input`` as a dict), ``stop_reason`` and ``usage``; it is rendered as SSE or
    as JSON depending on the request. An error carries ``error_body`` and is always JSON.
    ``chunks`` are the text deltas of the first text block (defaults to one delta per
    block); ``delay`` is slept before each delta, ``first_delay`` before anything.
    """

    status: int = 200
    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    headers: dict[str, str] = field(default_factory=dict)
    error_body: dict[str, Any] | None = None
    chunks: list[str] | None = None
    delay: float = 0.0
    first_delay: float = 0.0


Responder = Callable[[dict[str, Any]], Reply]


def text(answer: str = "Done.", *, usage: dict[str, int] | None = None,
         stop_reason: str = "end_turn", headers: dict[str, str] | None = None) -> Reply:
    """A plain text answer (``stop_reason`` end_turn)."""
    return Reply(content=[{"type": "text", "text": answer}], stop_reason=stop_reason,
                 usage=dict(usage or DEFAULT_USAGE), headers=dict(headers or {}))


def tool_use(name: str, input: dict[str, Any], *, preamble: str | None = None,
             tool_id: str | None = None, usage: dict[str, int] | None = None) -> Reply:
    """Ask the client to call tool ``name`` with ``input`` (``stop_reason`` tool_use).

    E.g. ``tool_use("Write", {"file_path": "/abs/x.txt", "content": "hi\\n"})``. The next
    request then carries a ``tool_result`` block for ``tool_id``.
    """
    blocks: list[dict[str, Any]] = []
    if preamble:
        blocks.append({"type": "text", "text": preamble})
    blocks.append({"type": "tool_use", "id": tool_id or f"toolu_{uuid.uuid4().hex[:24]}",
                   "name": name, "input": input})
    return Reply(content=blocks, stop_reason="tool_use", usage=dict(usage or DEFAULT_USAGE))


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {
    "authentication_error": "invalid x-api-key",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
}


def error(status: int, type: str | None = None, message: str | None = None, *,
          headers: dict[str, str] | None = None, retry_after: float | None = None) -> Reply:
    """An API error: ``{"type":"error","error":{"type":…,"message":…},"request_id":…}``.

    ``error(401)`` → authentication_error; ``error(429, headers=rate_limit_headers(...))``;
    ``error(529)`` → overloaded_error; ``error(500)`` → api_error.
    """
    etype = type or _ERROR_TYPES.get(status, "api_error")
    msg = message or _ERROR_MESSAGES.get(etype, etype)
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs.setdefault("retry-after", str(retry_after))
    if status == 529:
        hdrs.setdefault("x-should-retry", "true")
    return Reply(status=status, headers=hdrs, error_body={
        "type": "error", "error": {"type": etype, "message": msg},
        "request_id": f"req_{uuid.uuid4().hex[:24]}"})


def rate_limit_headers(status: str = "rejected", reset_epoch: int | None = None,
                       claim: str = "five_hour") -> dict[str, str]:
    """The ``anthropic-ratelimit-unified-*`` headers a subscription limit comes with."""
    reset = str(reset_epoch if reset_epoch is not None else int(time.time()) + 3600)
    window = "5h" if claim == "five_hour" else "7d"
    return {
        "anthropic-ratelimit-unified-status": status,
        "anthropic-ratelimit-unified-reset": reset,
        "anthropic-ratelimit-unified-representative-claim": claim,
        f"anthropic-ratelimit-unified-{window}-status": status,
        f"anthropic-ratelimit-unified-{window}-reset": reset,
        f"anthropic-ratelimit-unified-{window}-utilization": "1.0" if status == "rejected" else "0.9",
        "anthropic-ratelimit-unified-fallback-percentage": "0.5",
        "anthropic-ratelimit-unified-overage-status": "rejected",
        "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
    }


def slow_text(chunks: Iterable[str] | int = 600, delay: float = 0.1, *,
              first_delay: float = 0.0) -> Reply:
    """Text that drips out one delta every ``delay`` seconds (cancel/SIGTERM tests).

    ``chunks`` may be a count: ``slow_text(600, 0.1)`` streams for about a minute.
    """
    parts = [f"word{i} " for i in range(chunks)] if isinstance(chunks, int) else list(chunks)
    return Reply(content=[{"type": "text", "text": "".join(parts)}], chunks=parts,
                 delay=delay, first_delay=first_delay)


# --------------------------------------------------------------------------- request helpers


def system_text(body: dict[str, Any]) -> str:
    """The request's system prompt as one string (it may be a string or a list of blocks)."""
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return ""


def last_user_content(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The content blocks of the last user message (a string becomes one text block)."""
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            c = msg.get("content")
            return [{"type": "text", "text": c}] if isinstance(c, str) else list(c or [])
    return []


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``tool_result`` blocks of the last user message."""
    return [b for b in last_user_content(body) if b.get("type") == "tool_result"]


def script(*replies: Reply) -> Responder:
    """Answer requests with ``replies`` in order; the last one repeats forever."""
    if not replies:
        raise ValueError("script() needs at least one reply")
    lock = threading.Lock()
    it: Iterator[Reply] = itertools.chain(replies, itertools.repeat(replies[-1]))

    def responder(_body: dict[str, Any]) -> Reply:
        with lock:
            return next(it)

    return responder


def tool_then_text(name: str, input: dict[str, Any], final: str = "Done.") -> Responder:
    """Request one tool call; once the conversation carries a tool_result, answer ``final``.

    Decided from the request itself, so extra side requests cannot shift the script.
    """

    def responder(body: dict[str, Any]) -> Reply:
        if tool_results(body):
            return text(final)
        return tool_use(name, input)

    return responder


# --------------------------------------------------------------------------- recording


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names, credentials redacted
    body: Any  # parsed JSON, or None
    raw_body: bytes
    at: float
    status: int | None = None  # what the fake answered


# --------------------------------------------------------------------------- SSE rendering


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _split(s: str, n: int) -> list[str]:
    if not s:
        return [""]
    size = max(1, -(-len(s) // n))
    return [s[i:i + size] for i in range(0, len(s), size)]


def _message(reply: Reply, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": dict(reply.usage),
    }


def sse_events(reply: Reply, model: str) -> Iterator[tuple[float, bytes]]:
    """(delay before, bytes) for each SSE event of a successful streamed reply."""
    msg = _message(reply, model)
    start = dict(msg, content=[], stop_reason=None,
                 usage=dict(reply.usage, output_tokens=1))
    yield reply.first_delay, _sse("message_start", {"type": "message_start", "message": start})
    yield 0.0, _sse("ping", {"type": "ping"})
    first_text = True
    for index, block in enumerate(reply.content):
        btype = block.get("type")
        if btype == "text":
            yield 0.0, _sse("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": {"type": "text", "text": ""}})
            chunks = reply.chunks if (first_text and reply.chunks is not None) else _split(block["text"], 3)
            first_text = False
            for chunk in chunks:
                yield reply.delay, _sse("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": chunk}})
        elif btype == "tool_use":
            yield 0.0, _sse("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": {"type": "tool_use", "id": block["id"],
                                                                      "name": block["name"], "input": {}}})
            payload = json.dumps(block.get("input", {}))
            for part in [""] + _split(payload, 3):
                yield 0.0, _sse("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": part}})
        else:  # anything else (thinking …) is sent whole
            yield 0.0, _sse("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": block})
        yield 0.0, _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield 0.0, _sse("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": reply.usage.get("output_tokens", 0)}})
    yield 0.0, _sse("message_stop", {"type": "message_stop"})


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeAnthropic/1.0"
    fake: FakeAnthropic  # set on a subclass per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    # -- plumbing

    def _record(self, body_bytes: bytes) -> RecordedRequest:
        parts = urlsplit(self.path)
        headers = {k.lower(): (REDACTED if k.lower() in SECRET_HEADERS else v)
                   for k, v in self.headers.items()}
        try:
            body = json.loads(body_bytes) if body_bytes else None
        except ValueError:
            body = None
        rec = RecordedRequest(self.command, parts.path, parse_qs(parts.query), headers, body,
                              body_bytes, time.time())
        self.fake._append(rec)
        return rec

    def _read_body(self) -> bytes:
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None,
                   head: bool = False) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- verbs

    def do_HEAD(self) -> None:
        self._record(b"")
        self._send_json(200, {}, head=True)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/v1/models":
            given = self.headers.get("x-api-key") or \
                (self.headers.get("authorization") or "").removeprefix("Bearer ").strip()
            rec = self._record(b"")
            if not given or given in self.fake.rejected_credentials:
                rec.status = 401
                self._send_json(401, {"type": "error", "error": {
                    "type": "authentication_error", "message": "invalid x-api-key"}})
            else:
                rec.status = 200
                self._send_json(200, {"data": [{"type": "model", "id": "claude-sonnet-4-5"}],
                                      "has_more": False})
            return
        rec = self._record(b"")
        rec.status = 200 if rec.path in ("/", "") else 404
        if rec.status == 200:
            self._send_json(200, {"ok": True})
        else:
            self._not_found()

    def do_POST(self) -> None:
        rec = self._record(self._read_body())
        if rec.path == "/v1/messages":
            self._messages(rec)
        elif rec.path == "/v1/messages/count_tokens":
            rec.status = 200
            self._send_json(200, {"input_tokens": max(1, len(rec.raw_body) // 4)})
        else:
            rec.status = 404
            self._not_found()

    do_PUT = do_PATCH = do_DELETE = do_POST  # harmless 404s off the known paths

    def _not_found(self) -> None:
        self._send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                         "message": f"Not found: {self.path}"}})

    def _messages(self, rec: RecordedRequest) -> None:
        body = rec.body if isinstance(rec.body, dict) else {}
        try:
            reply = self.fake.responder(body)
        except Exception as exc:  # a broken responder must show up, not hang the client
            self.fake.responder_errors.append(exc)
            reply = error(500, "api_error", f"fake responder failed: {exc!r}")
        rec.status = reply.status
        model = body.get("model") or "claude-sonnet-4-5"
        if reply.status != 200:
            self._send_json(reply.status, reply.error_body or {}, reply.headers)
            return
        if not body.get("stream"):
            if reply.first_delay:
                time.sleep(reply.first_delay)
            self._send_json(200, _message(reply, model), reply.headers)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            for delay, event in sse_events(reply, model):
                if delay:
                    if self.fake._stopping.wait(delay):
                        break
                self._chunk(event)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. it was killed)


class FakeAnthropic:
    """The fake server. ``with FakeAnthropic(responder) as api: api.base_url, api.requests``."""

    def __init__(self, responder: Responder | Reply | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if responder is None:
            responder = text("Done.")
        if isinstance(responder, Reply):
            responder = script(responder)
        self.responder: Responder = responder
        self.responder_errors: list[BaseException] = []
        self.rejected_credentials: set[str] = set()  # answered 401 by GET /v1/models
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-anthropic",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Only the ``POST /v1/messages`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/messages"]

    def _append(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)
            self._lock.notify_all()

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool],
                 timeout: float = 30.0) -> bool:
        """Block until ``predicate(requests)`` holds (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self._requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True
