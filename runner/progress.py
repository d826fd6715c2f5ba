"""Progress of a running agent, read from its stream, for the web app to show live.

A ``Tracker`` follows the agent's JSON events (Claude Code stream-json, Codex ``--json``,
Gemini stream-json) and keeps a snapshot: turns, tool calls, the current tool and a short
redacted argument, tokens and cost so far, the last assistant text (capped). A
``ProgressReader`` around the agent's reader feeds it and hands each snapshot to a
``report`` callable — the lease heartbeat, whose thread writes it (runner/heartbeat.py):
nothing here touches the database, so the agent's output is never held up by it.

A snapshot is *urgent* on a tool call's start or end, on each new turn and at the run's
result (each gets its row); the rest (new assistant text) are ticks, written at most every
``PROGRESS_SECONDS``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from runner import secrets
from runner.agents.base import ReaderWrapper, StreamReader
from runner.jsonl import json_event

PROGRESS_SECONDS = 3.0
TEXT_CAP = 500
ARG_CAP = 120
# The argument that says most about a tool call, by the names the agents' tools use.
_TELLING_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description",
                 "prompt", "notebook_path")

Report = Callable[[dict[str, Any], bool], None]


_PATH_KEYS = {"file_path", "path", "notebook_path"}


def short(value: Any, limit: int, tail: bool = False) -> str | None:
    """A one-line, redacted, capped form of ``value`` (redacted before the cut, so that a
    secret is never cut into a fragment the redactor no longer knows). ``tail`` keeps the
    end instead (a path's file name says more than its directories)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text[-4096:] if tail else text[:4096]
    text = secrets.safe_text(" ".join(text.split()), None) or ""
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1):] if tail else text[: limit - 1] + "…"


def tool_argument(tool_input: Any) -> str | None:
    if isinstance(tool_input, dict):
        for key in _TELLING_KEYS:
            if isinstance(tool_input.get(key), str) and tool_input[key].strip():
                return short(tool_input[key], ARG_CAP, tail=key in _PATH_KEYS)
    return short(tool_input, ARG_CAP) if tool_input not in (None, {}, []) else None


class Tracker:
    """The snapshot of one attempt, updated line by line."""

    def __init__(self, agent: str, spend: Callable[[], Any] | None = None) -> None:
        self.agent = agent
        self.spend = spend
        self.started = time.monotonic()
        self.turns = 0
        self.tool_calls = 0
        self.tool: dict[str, Any] | None = None
        self.last_text: str | None = None
        self._messages: set[str] = set()

    def feed(self, stream: str, line: str) -> str | None:
        """Take one line; returns the kind of change: 'turn', 'tool_start', 'tool_end',
        'text' (a tick), or None when the line changed nothing shown."""
        event = json_event(line) if stream == "stdout" else None
        if event is None:
            return None
        handler = {"claude": self._claude, "codex": self._codex, "gemini": self._gemini}.get(self.agent)
        return handler(event) if handler is not None else None

    def snapshot(self, kind: str) -> dict[str, Any]:
        spent = self.spend() if self.spend is not None else None
        return {
            "kind": kind, "agent": self.agent, "turns": self.turns, "tool_calls": self.tool_calls,
            "tool": dict(self.tool) if self.tool else None,
            "tokens": getattr(spent, "tokens", None), "cost_usd": getattr(spent, "cost_usd", None),
            "last_text": self.last_text, "seconds": round(time.monotonic() - self.started, 1),
        }

    # -- the agents' streams ---------------------------------------------------------------

    def _start_tool(self, name: Any, argument: str | None) -> str:
        self.tool_calls += 1
        self.tool = {"name": short(name, 100) or "?", "arg": argument, "state": "running"}
        return "tool_start"

    def _end_tool(self, failed: bool = False) -> str | None:
        if self.tool is None:
            return None
        self.tool["state"] = "failed" if failed else "done"
        return "tool_end"

    def _text(self, text: Any) -> str | None:
        if not isinstance(text, str) or not text.strip():
            return None
        self.last_text = short(text, TEXT_CAP)
        return "text"

    def _claude(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        message = event.get("message") if isinstance(event.get("message"), dict) else {}
        blocks = message.get("content") if isinstance(message.get("content"), list) else []
        if kind == "assistant":
            change = None
            msg_id = str(message.get("id") or "")
            if msg_id and msg_id not in self._messages:  # one message: several events
                self._messages.add(msg_id)
                self.turns += 1
                change = "turn"
            for block in blocks:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "text":
                    change = self._text(block.get("text")) and (change or "text")
                elif block.get("type") == "tool_use":
                    change = self._start_tool(block.get("name"), tool_argument(block.get("input")))
            return change
        if kind == "user":
            results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results:
                return self._end_tool(failed=any(b.get("is_error") for b in results))
        if kind == "result":  # the run's end: its snapshot carries the cost, known only now
            self._text(event.get("result"))
            return "result"
        return None

    def _codex(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        item = event.get("item") if isinstance(event.get("item"), dict) else {}
        itype = item.get("type")
        if kind == "turn.started":
            self.turns += 1
            return "turn"
        if kind == "item.started" and itype in ("command_execution", "mcp_tool_call", "web_search"):
            name = item.get("tool") if itype == "mcp_tool_call" else itype
            return self._start_tool(name, tool_argument(item.get("command") or item.get("arguments")
                                                        or item.get("query")))
        if kind == "item.completed":
            if itype == "agent_message":
                return self._text(item.get("text"))
            if itype == "file_change":
                paths = [c.get("path") for c in item.get("changes") or [] if isinstance(c, dict)]
                self._start_tool("file_change", short(", ".join(map(str, paths)), ARG_CAP))
                return self._end_tool(item.get("status") == "failed")
            if itype in ("command_execution", "mcp_tool_call", "web_search"):
                return self._end_tool(item.get("status") == "failed")
        return None

    def _gemini(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        if kind == "message" and event.get("role") == "user":
            self.turns += 1
            return "turn"
        if kind == "message" and event.get("role") == "assistant":
            text = event.get("content")
            if event.get("delta") and self.last_text and isinstance(text, str):
                text = self.last_text + text
            return self._text(text)
        if kind == "tool_use":
            return self._start_tool(event.get("tool_name") or event.get("name"),
                                    tool_argument(event.get("parameters") or event.get("args")))
        if kind == "tool_result":
            return self._end_tool(event.get("status") not in (None, "success"))
        return None


_URGENT = {"turn", "tool_start", "tool_end", "result"}


class ProgressReader(ReaderWrapper):
    """Feeds the tracker after the agent's own reader (so tokens and cost are current) and
    reports each change; never lets progress cost the run."""

    def __init__(self, inner: StreamReader, tracker: Tracker, report: Report) -> None:
        super().__init__(inner)
        self.tracker, self.report = tracker, report

    def feed(self, stream: str, line: str) -> None:
        self.inner.feed(stream, line)
        try:
            change = self.tracker.feed(stream, line)
            if change is not None:
                self.report(self.tracker.snapshot(change), change in _URGENT)
        except Exception:  # noqa: BLE001 - progress is a view; the run goes on without it
            pass


def summary(snapshot: Any) -> str | None:
    """One short line for ``runner workers`` and ``runner jobs --watch``:
    ``turn 3 · Write …/step2.txt (done) · 51.7k tokens · $0.0457``."""
    if not isinstance(snapshot, dict):
        return None
    parts = [f"turn {snapshot.get('turns') or 0}"]
    tool = snapshot.get("tool")
    if isinstance(tool, dict) and tool.get("name"):
        arg = f" {str(tool['arg'])[-30:]}" if tool.get("arg") else ""
        parts.append(f"{tool['name']}{arg} ({tool.get('state')})")
    tokens = snapshot.get("tokens")
    if isinstance(tokens, int):
        parts.append(f"{tokens / 1000:.1f}k tokens" if tokens >= 1000 else f"{tokens} tokens")
    if isinstance(snapshot.get("cost_usd"), (int, float)):
        parts.append(f"${snapshot['cost_usd']:.4f}")
    return " · ".join(parts)
