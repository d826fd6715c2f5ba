"""Google Gemini CLI (``gemini -o stream-json --prompt=…``): argv, env, and its stream.

Events (packages/core/src/output/types.ts): ``init`` {session_id, model}, ``message``
{role, content, delta}, ``tool_use``, ``tool_result``, ``error`` {severity, message} and
a final ``result`` {status: success|error, error: {type, message}, stats: {…tokens}}.
"""

from __future__ import annotations

import re
from typing import Any

from runner.agents.base import (Agent, AgentCommand, RunContext, RunOutput, StreamReader,
                                base_env, from_runner_env)
from runner.agents.codex import with_rules
from runner.jsonl import json_event
from runner.outcome import Outcome, Verdict

APPROVAL_MODES = {"default": "default", "acceptEdits": "auto_edit", "bypassPermissions": "yolo",
                  "plan": "plan"}
AUTH_TEXT = re.compile(r"api key not valid|api_key_invalid|invalid auth method|unauthenticated|"
                       r"invalid authentication credentials|\b401\b", re.I)
QUOTA_TEXT = re.compile(r"exhausted your (?:daily )?quota|quota exceeded|exceeded your current quota|"
                        r"resource_exhausted", re.I)
# Exit codes of the CLI (packages/core/src/utils/errors.ts): 41 authentication, 42 input,
# 53 turn limit.
EXIT_AUTH, EXIT_INPUT, EXIT_TURN_LIMIT = 41, 42, 53


class GeminiAgent(Agent):
    name = "gemini"

    def command(self, ctx: RunContext) -> AgentCommand:
        config, settings = ctx.config, ctx.settings
        # --skip-trust: headless Gemini refuses an untrusted folder (exit 55), and this one
        # is the worktree the runner made for the job.
        argv = [settings.gemini_bin, "--output-format", "stream-json", "--skip-trust"]
        if config.model:
            argv += ["--model", config.model]
        if config.permission_mode:
            argv += ["--approval-mode", APPROVAL_MODES[config.permission_mode]]
        # One argument "--prompt=<text>": the text can never be read as an option.
        argv.append(f"--prompt={with_rules(ctx)}")
        env = from_runner_env(base_env(ctx), "GEMINI_API_KEY", "GOOGLE_API_KEY",
                              "GOOGLE_GEMINI_BASE_URL")
        return AgentCommand(argv, env, ctx.workdir)

    def reader(self) -> StreamReader:
        return GeminiReader()


class GeminiReader(StreamReader):
    def __init__(self) -> None:
        self.session_id: str | None = None
        self.model: str | None = None
        self.text: list[str] = []
        self.result: dict[str, Any] | None = None
        self.errors: list[str] = []
        self.tool_calls = 0

    def feed(self, stream: str, line: str) -> None:
        event = json_event(line) if stream == "stdout" else None
        if event is None:
            return
        kind = event.get("type")
        if kind == "init":
            self.session_id, self.model = event.get("session_id"), event.get("model")
        elif kind == "message" and event.get("role") == "assistant":
            if not event.get("delta"):
                self.text = []
            self.text.append(str(event.get("content") or ""))
        elif kind == "tool_use":
            self.tool_calls += 1
        elif kind == "error" and event.get("severity") == "error":
            self.errors = (self.errors + [str(event.get("message") or "")])[-5:]
        elif kind == "result":
            self.result = event

    def finished(self) -> bool:
        return self.result is not None

    def outcome(self, run: RunOutput) -> Outcome:
        result = self._result(run.exit_code)
        res = self.result or {}
        if res.get("status") == "success" and run.exit_code == 0:
            return Outcome(Verdict.SUCCEEDED, result=result)
        error = res.get("error") if isinstance(res.get("error"), dict) else {}
        said = " | ".join(s for s in [str(error.get("message") or ""), *self.errors[-2:],
                                      *run.stderr_tail[-3:]] if s.strip())[:500]
        if run.exit_code == EXIT_AUTH or AUTH_TEXT.search(said):
            return Outcome(Verdict.TOKEN_EXPIRED, result=result,
                           reason=f"Gemini's credentials were rejected: {said}")
        if QUOTA_TEXT.search(said):
            return Outcome(Verdict.USAGE_LIMIT, result=result, reason=f"Gemini quota exhausted: {said}")
        if run.exit_code == EXIT_TURN_LIMIT:
            return Outcome(Verdict.RETRY, result=result, reason=f"Gemini reached its turn limit: {said}")
        if run.exit_code == EXIT_INPUT:
            return Outcome(Verdict.FAILED, result=result, reason=f"Gemini rejected its input: {said}")
        what = "ended with an error" if res else f"exited with code {run.exit_code} without a result"
        return Outcome(Verdict.RETRY, result=result, reason=f"Gemini {what}" + (f": {said}" if said else ""))

    def _result(self, exit_code: int | None) -> dict[str, Any]:
        stats = (self.result or {}).get("stats") or {}
        usage = {k: stats[k] for k in ("input_tokens", "output_tokens", "total_tokens", "cached")
                 if isinstance(stats.get(k), int)}
        out: dict[str, Any] = {"summary": "".join(self.text).strip() or None, "cost_usd": None,
                               "usage": usage or None, "turns": None, "session_id": self.session_id,
                               "model": self.model, "tool_calls": stats.get("tool_calls", self.tool_calls)}
        if exit_code is not None:
            out["exit_code"] = exit_code
        return out
