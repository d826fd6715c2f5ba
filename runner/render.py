"""Readable lines from a run log, for ``runner logs`` (runner/logview.py).

A run log holds three kinds of lines (runner/logs.py): the runner's structlog JSON, the
agent's stdout (Claude Code stream-json, Codex ``exec --json``, Gemini stream-json) after
``[agent <time read>] `` and the agent's stderr after ``[agent stderr <time read>] ``. ``Renderer.line`` turns
one into zero or more readable lines:

    23:02:35 info    job_claimed attempt=1 max_attempts=3 queue=default
             claude  tool Write /repo/hello.txt
             claude  result success cost=$0.0457 tokens in=2400 out=84 turns=2 2.1s

Unknown events are shown by their type, compactly; lines that are not JSON objects are
shown as they are. Nothing here may raise on odd input: a log is read at 2 am.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from runner.clock import shown_local
from runner.rendertext import (  # noqa: F401 - hhmmss and key_argument are part of this module's face
    PAD, UTC_STAMP, hhmmss, key_argument, kv, one_line, text_block, token_counts,
)
from runner.jsonl import json_event

# An agent's line as the runner wrote it (runner/logs.py): "[agent <when>] <line>" for
# stdout, "[agent stderr <when>] <line>"; older logs have no time ("[agent stderr] …").
# The prefix only: the rest of the line is sliced off after it, not matched by `.*`
# and copied into a group (a pass over every byte of a line that may be megabytes).
_AGENT_LINE = re.compile(r"\[agent( stderr)?(?: (\d{4}-\d\d-\d\dT[\d:.]+Z))?\] ?")
# A Claude Code user event whose content is a list of blocks (compact JSON, as the CLI
# writes it): the tool results that come back after every tool call, the commonest and
# biggest lines of a long run. Such an event shows nothing unless a block is an error or
# a text block (Renderer._claude_user), so a line that has neither key is not parsed.
_CLAUDE_TOOL_RESULTS = '{"type":"user","message":{"role":"user","content":['
_HIDDEN_KEYS = {"timestamp", "level", "event", "worker_id", "job_id", "exception"}

_CLAUDE_KINDS = frozenset(("system", "assistant", "user", "result", "rate_limit_event", "stream_event"))

class Renderer:
    """Stateful: it learns which agent wrote the stream, and joins Gemini's text deltas."""

    def __init__(self) -> None:
        self.agent = "agent"
        self._delta: list[str] = []
        self._was_delta = False
        self.warnings: list[str] = []  # repeated at the end of `runner logs`
        # RUNNER_TIME_ZONE read once, not at every line's stamp (os.environ per call)
        self._utc = not shown_local()

    def _time(self, value: Any) -> str | None:
        """hhmmss, with the zone setting as it was when this renderer began."""
        if self._utc and isinstance(value, str) and (stamp := UTC_STAMP.fullmatch(value)):
            return stamp[1] + "Z"
        return hhmmss(value)

    @property
    def agent(self) -> str:
        return self._agent

    @agent.setter
    def agent(self, name: str) -> None:
        self._agent, self._tag = name, f"{PAD}{name:<7} "

    def tag(self) -> str:
        return self._tag

    # -- entry points ------------------------------------------------------------------

    def line(self, raw: str) -> list[str]:
        raw = raw.rstrip("\n")
        self._was_delta = False
        out = []
        when = None
        if raw[:1] == "[" and (agent := _AGENT_LINE.match(raw)) is not None:
            stderr, when, raw = agent.group(1), self._time(agent.group(2)), raw[agent.end():]
            if stderr:
                raw = f"[agent stderr] {raw}"
        if raw.startswith("[agent stderr] "):
            out = [f"{PAD}{raw}"]
        elif raw.startswith(_CLAUDE_TOOL_RESULTS) and self._quiet_tool_results(raw):
            self.agent = "claude"
        else:
            event = json_event(raw)
            if event is None:
                out = [raw]
            elif "type" not in event and "event" in event and "level" in event:
                out = self.runner(event)
            elif not isinstance(event.get("type"), str):
                out = [raw]  # JSON of some other program: as it is
            else:
                out = self.agent_event(event)
        if when and out and out[0].startswith(PAD):
            out[0] = f"{when:<{len(PAD) - 1}} {out[0][len(PAD):]}"  # the time the runner read it
        if self._delta and not self._was_delta:
            out = self.flush() + out
        return out

    def _quiet_tool_results(self, raw: str) -> bool:
        """This Claude user event renders nothing: no error block, no text block. Inside a
        string the keys' quotes are escaped, so only JSON structure matches; any other
        spelling ("is_error": true) is parsed after all."""
        return (self._agent in ("agent", "claude") and raw.endswith("}")
                and '"type":"text"' not in raw
                and raw.count('"is_error"') == raw.count('"is_error":false'))

    def closing(self) -> list[str]:
        """Lines for the end of the log: the last run's warnings, once more."""
        if not self.warnings:
            return []
        return [f"{PAD}warnings of the last run:", *(f"{PAD}  {w}" for w in self.warnings)]

    def flush(self) -> list[str]:
        """Text held back (Gemini deltas), to be shown when nothing more is coming."""
        if not self._delta:
            return []
        text, self._delta = "".join(self._delta), []
        return text_block(f"{self.tag()}text ", text)

    # -- the runner's own lines ----------------------------------------------------------

    def runner(self, e: dict[str, Any]) -> list[str]:
        when = self._time(e.get("timestamp")) or PAD[:-1]
        head = f"{when} {str(e.get('level', '')):<7} {e.get('event')}"
        rest = " ".join(kv(k, v) for k, v in e.items() if k not in _HIDDEN_KEYS)
        out = [f"{head} {rest}".rstrip()]
        if isinstance(e.get("exception"), str):
            out += [f"{PAD}| {line}" for line in e["exception"].rstrip().splitlines()]
        return out

    # -- agent events --------------------------------------------------------------------

    def agent_event(self, e: dict[str, Any]) -> list[str]:
        kind = str(e.get("type", "?"))
        if kind in _CLAUDE_KINDS and (self._agent in ("agent", "claude") or "session_id" in e):
            if self._agent == "agent":
                self.agent = "claude"
            if kind == "assistant":  # the most frequent, first
                return self._claude_assistant(e)
            if kind == "user":
                return self._claude_user(e)
            return self.claude(kind, e)
        if "." in kind or (kind == "error" and self.agent == "codex"):
            self.agent = "codex"
            return self.codex(kind, e)
        if kind in ("init", "message", "tool_use", "tool_result", "error", "result"):
            self.agent = "gemini"
            return self.gemini(kind, e)
        return [f"{self.tag()}{kind} " + one_line(json.dumps(e, default=str), 160)]

    def claude(self, kind: str, e: dict[str, Any]) -> list[str]:
        t = self.tag()
        sub = e.get("subtype")
        if kind == "system" and sub == "init":
            tools = e.get("tools") if isinstance(e.get("tools"), list) else []
            return [f"{t}init model={e.get('model')} cwd={e.get('cwd')} tools={len(tools)} "
                    f"permission_mode={e.get('permissionMode')} version={e.get('claude_code_version')} "
                    f"session={e.get('session_id')}"]
        if kind == "system" and sub == "api_retry":
            delay = e.get("retry_delay_ms")
            return [f"{t}api_retry attempt {e.get('attempt')}/{e.get('max_retries')} "
                    f"status={e.get('error_status')} error={e.get('error')}"
                    + (f" retry in {delay / 1000:.1f}s" if isinstance(delay, (int, float)) else "")]
        if kind == "system" and sub == "permission_denied":
            return [f"{t}permission denied {e.get('tool_name')}: {one_line(e.get('message', ''), 300)}"]
        if kind == "system":
            return [f"{t}system {sub}"]
        if kind == "assistant":
            return self._claude_assistant(e)
        if kind == "user":
            return self._claude_user(e)
        if kind == "rate_limit_event":
            info = e.get("rate_limit_info") if isinstance(e.get("rate_limit_info"), dict) else {}
            resets = info.get("resetsAt")
            when = datetime.fromtimestamp(resets).astimezone().strftime("%Y-%m-%d %H:%M %Z") \
                if isinstance(resets, (int, float)) else resets
            util = f" utilization={info['utilization']}" if "utilization" in info else ""
            return [f"{t}rate_limit status={info.get('status')} type={info.get('rateLimitType')}"
                    f"{util} resets={when}"]
        if kind == "result":
            warnings = permission_warnings(e.get("permission_denials"))
            self.warnings = warnings
            return [self._claude_result(e), *(f"{t}warning {w}" for w in warnings)]
        if kind == "stream_event":
            return []  # partial-message deltas (--include-partial-messages): the full message follows
        return [f"{t}{kind}"]

    def _claude_assistant(self, e: dict[str, Any]) -> list[str]:
        t = self.tag()
        msg = e.get("message") if isinstance(e.get("message"), dict) else {}
        content = msg.get("content") if isinstance(msg.get("content"), list) else []
        out: list[str] = []
        if e.get("error"):
            text = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
            status = e.get("api_error_status")
            return [f"{t}api error {e['error']}" + (f" ({status})" if status else "")
                    + (f": {one_line(text, 300)}" if text else "")]
        for block in content:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text":
                out += text_block(f"{t}text ", block.get("text", ""))
            elif btype == "tool_use":
                name = str(block.get("name"))
                out.append(f"{t}tool {name} {key_argument(name, block.get('input'))}".rstrip())
            elif btype == "thinking":
                out.append(f"{t}thinking ({len(str(block.get('thinking', '')))} chars)")
            else:
                out.append(f"{t}{btype}")
        return out

    def _claude_user(self, e: dict[str, Any]) -> list[str]:
        msg = e.get("message") if isinstance(e.get("message"), dict) else {}
        content = msg.get("content")
        if isinstance(content, str):
            return [f"{self.tag()}user {one_line(content, 300)}"]
        out = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result" and block.get("is_error"):
                body = block.get("content")
                if isinstance(body, list):
                    body = " ".join(str(b.get("text", "")) for b in body if isinstance(b, dict))
                out.append(f"{self.tag()}tool error: {one_line(body, 500)}")
            elif block.get("type") == "text" and not str(block.get("text", "")).startswith("<"):
                out.append(f"{self.tag()}user {one_line(block.get('text', ''), 300)}")
        return out

    def _claude_result(self, e: dict[str, Any]) -> str:
        parts = [f"{self.tag()}result {e.get('subtype')}", f"is_error={str(e.get('is_error')).lower()}"]
        if e.get("api_error_status"):
            parts.append(f"api_error_status={e['api_error_status']}")
        cost = e.get("total_cost_usd")
        if isinstance(cost, (int, float)):
            parts.append(f"cost=${cost:.4f}")
        tokens = token_counts(e.get("usage"))
        if tokens:
            parts.append(tokens)
        parts.append(f"turns={e.get('num_turns')}")
        if isinstance(e.get("duration_ms"), (int, float)):
            parts.append(f"duration={e['duration_ms'] / 1000:.1f}s")
        if e.get("terminal_reason"):
            parts.append(f"terminal_reason={e['terminal_reason']}")
        denials = e.get("permission_denials")
        if denials:
            names = [str(d.get("tool_name")) for d in denials if isinstance(d, dict)]
            parts.append(f"permission_denials={len(denials)} ({', '.join(names)})")
        line = " ".join(parts)
        if e.get("errors"):
            line += f" errors={one_line(json.dumps(e['errors']), 300)}"
        if isinstance(e.get("result"), str):
            line += f": {one_line(e['result'], 500)}"
        return line

    def codex(self, kind: str, e: dict[str, Any]) -> list[str]:
        t = self.tag()
        if kind == "thread.started":
            return [f"{t}thread started {e.get('thread_id')}"]
        if kind == "turn.started":
            return [f"{t}turn started"]
        if kind == "turn.completed":
            return [f"{t}turn completed {token_counts(e.get('usage'))}".rstrip()]
        if kind == "turn.failed":
            err = e.get("error") if isinstance(e.get("error"), dict) else {}
            return [f"{t}turn FAILED: {one_line(err.get('message', e.get('error')), 500)}"]
        if kind == "error":
            return [f"{t}error: {one_line(e.get('message'), 500)}"]
        if kind.startswith("item."):
            item = e.get("item") if isinstance(e.get("item"), dict) else {}
            return self._codex_item(kind, item)
        return [f"{t}{kind}"]

    def _codex_item(self, kind: str, item: dict[str, Any]) -> list[str]:
        t, itype = self.tag(), item.get("type")
        if kind == "item.updated":
            return []
        if kind == "item.started":
            if itype == "command_execution":
                return [f"{t}tool shell {one_line(item.get('command', ''))}"]
            return []  # shown once, when completed
        if itype == "agent_message":
            return text_block(f"{t}text ", str(item.get("text", "")))
        if itype == "reasoning":
            return [f"{t}reasoning ({len(str(item.get('text', '')))} chars)"]
        if itype == "command_execution":
            code = item.get("exit_code")
            if code not in (0, None) or item.get("status") == "failed":
                return [f"{t}tool error: shell exit {code}: {one_line(item.get('command', ''))}"]
            return []
        if itype == "file_change":
            changes = item.get("changes") if isinstance(item.get("changes"), list) else []
            files = ", ".join(f"{c.get('kind', '')} {c.get('path')}".strip()
                              for c in changes if isinstance(c, dict))
            return [f"{t}tool file_change {one_line(files)}"]
        if itype == "mcp_tool_call":
            return [f"{t}tool {item.get('server')}.{item.get('tool')} status={item.get('status')}"]
        if itype == "web_search":
            return [f"{t}tool web_search {one_line(item.get('query', ''))}"]
        if itype == "error":
            return [f"{t}error: {one_line(item.get('message'), 500)}"]
        return [f"{t}{itype}"]

    def gemini(self, kind: str, e: dict[str, Any]) -> list[str]:
        t = self.tag()
        if kind == "init":
            return [f"{t}init model={e.get('model')} session={e.get('session_id')}"]
        if kind == "message":
            if e.get("role") != "assistant":
                return []  # the prompt we sent
            if e.get("delta"):
                self._delta.append(str(e.get("content", "")))
                self._was_delta = True
                return []
            return text_block(f"{t}text ", str(e.get("content", "")))
        if kind == "tool_use":
            name = str(e.get("tool_name"))
            return [f"{t}tool {name} {key_argument(name, e.get('parameters'))}".rstrip()]
        if kind == "tool_result":
            if e.get("status") == "error":
                err = e.get("error") if isinstance(e.get("error"), dict) else {}
                return [f"{t}tool error: {one_line(err.get('message') or e.get('output', ''), 500)}"]
            return []
        if kind == "error":
            return [f"{t}{e.get('severity', 'error')}: {one_line(e.get('message'), 500)}"]
        stats = e.get("stats") if isinstance(e.get("stats"), dict) else {}
        line = f"{t}result {e.get('status')} {token_counts(stats)}".rstrip()
        if isinstance(stats.get("duration_ms"), (int, float)):
            line += f" duration={stats['duration_ms'] / 1000:.1f}s"
        if "tool_calls" in stats:
            line += f" tool_calls={stats['tool_calls']}"
        err = e.get("error") if isinstance(e.get("error"), dict) else None
        return [line + (f": {one_line(err.get('message'), 500)}" if err else "")]


def permission_warnings(denials: Any) -> list[str]:
    """One sentence per tool call the agent's permission mode refused (result.warnings,
    ``runner show``, the end of ``runner logs``)."""
    if not isinstance(denials, list):
        return []
    out = []
    for d in denials[:50]:
        if not isinstance(d, dict):
            continue
        name = str(d.get("tool_name") or "a tool")
        arg = key_argument(name, d.get("tool_input"))
        out.append(f"permission denied: {name}{' ' + arg if arg else ''} "
                   f"(the job's permission_mode / allowed_tools did not allow it)")
    if len(denials) > 50:
        out.append(f"… and {len(denials) - 50} more permission denials")
    return out
