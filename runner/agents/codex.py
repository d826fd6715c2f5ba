"""OpenAI Codex CLI (``codex exec --json``): argv, env, and its JSONL event stream.

Events (codex-rs/exec/src/exec_events.rs): ``thread.started`` {thread_id}, ``turn.started``,
``item.started|updated|completed`` {item: {type: agent_message|command_execution|
file_change|…}}, ``turn.completed`` {usage}, ``turn.failed`` {error: {message}}, and
``error`` {message} — which is also used, non-fatally, for "Reconnecting... n/5 (…)".
"""

from __future__ import annotations

import json
import re
from typing import Any

from runner.agents import validate as check
from runner.agents.base import (Agent, AgentCommand, RunContext, RunOutput, StreamReader,
                                base_env, from_runner_env)
from runner.agents.limits import reset_time
from runner.errors import InvalidAgentConfig
from runner.jsonl import json_event
from runner.outcome import EarlyStop, Outcome, Verdict
from runner.structured import MISSING
# permission_mode (the runner's vocabulary, checked against the operator's allowlist)
# → Codex sandbox; bypassPermissions drops the sandbox and the approvals altogether.
SANDBOXES = {"plan": "read-only", "default": "workspace-write", "acceptEdits": "workspace-write",
             "bypassPermissions": None}
AUTH_TEXT = re.compile(r"\b401\b|unauthorized|invalid_api_key|incorrect api key|"
                       r"token (?:has )?expired|refresh token|not logged in|please (?:log|sign) ?in", re.I)
USAGE_TEXT = re.compile(r"usage limit|usage_limit_reached", re.I)


class CodexAgent(Agent):
    name = "codex"

    def command(self, ctx: RunContext) -> AgentCommand:
        config, settings = ctx.config, ctx.settings
        argv = [settings.codex_bin, "exec", "--json", "--color", "never", "--skip-git-repo-check",
                "-C", str(ctx.workdir)]
        if config.model:
            argv += ["--model", config.model]
        mode = config.permission_mode or "default"
        if SANDBOXES[mode] is None:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        else:
            argv += ["--sandbox", SANDBOXES[mode]]
        if config.effort:
            argv += ["-c", f'model_reasoning_effort="{config.effort}"']
        if config.output_schema is not None:
            # Codex's last message is then the answer as JSON (runner/structured.py checks it).
            path = check.write_private_json(ctx.job_dir / "output-schema.json", config.output_schema)
            path.chmod(0o644)  # the agent's own uid reads it; a schema is no secret
            argv += ["--output-schema", str(path)]
        argv += ["--", with_rules(ctx)]
        env = from_runner_env(base_env(ctx), "OPENAI_API_KEY", "CODEX_API_KEY", "CODEX_HOME",
                              "OPENAI_BASE_URL")
        return AgentCommand(argv, env, ctx.workdir)

    def reader(self) -> StreamReader:
        return CodexReader()


def with_rules(ctx: RunContext) -> str:
    """The prompt, after the agent rules (CLAUDE.md) for CLIs without a system-prompt flag."""
    rules = check.rules_text(ctx.settings)
    prompt = ctx.prompt if not rules else (
        f"<runner-rules>\n{rules.strip()}\n</runner-rules>\n\n{ctx.prompt}")
    if prompt.strip() == "-":  # codex reads "-" as "the prompt is on stdin"
        raise InvalidAgentConfig("the prompt '-' cannot be given to this agent")
    return prompt


class CodexReader(StreamReader):
    def __init__(self) -> None:
        self.thread_id: str | None = None
        self.summary: str | None = None
        self.turns = 0
        self.usage: dict[str, int] = {}
        self.failure: str | None = None
        self.errors: list[str] = []

    def feed(self, stream: str, line: str) -> None:
        event = json_event(line) if stream == "stdout" else None
        if event is None:
            return
        kind = event.get("type")
        item = event.get("item") if isinstance(event.get("item"), dict) else {}
        if kind == "thread.started":
            self.thread_id = event.get("thread_id")
        elif kind == "item.completed" and item.get("type") == "agent_message":
            self.summary = str(item.get("text") or "")
        elif kind == "turn.completed":
            self.turns += 1
            for key, value in (event.get("usage") or {}).items():
                if isinstance(value, int):
                    self.usage[key] = self.usage.get(key, 0) + value
        elif kind == "turn.failed":
            self.failure = str((event.get("error") or {}).get("message") or "turn failed")
        elif kind == "error":
            message = str(event.get("message") or "")
            self.errors = (self.errors + [message])[-5:]
            self._stop_early(message)

    @property
    def structured_output(self) -> Any:
        """With --output-schema: the last message, which must be the answer as JSON."""
        try:
            return json.loads(self.summary) if self.summary is not None else MISSING
        except ValueError:
            return MISSING

    def _stop_early(self, message: str) -> None:
        # Codex retries a 401 five times; the first one already says enough.
        if AUTH_TEXT.search(message):
            raise EarlyStop(Outcome(Verdict.TOKEN_EXPIRED, result=self._result(None),
                                    reason=f"Codex's credentials were rejected: {message[:300]}"))
        if USAGE_TEXT.search(message):
            raise EarlyStop(Outcome(Verdict.USAGE_LIMIT, reset_at=reset_time(message),
                                    result=self._result(None),
                                    reason=f"Codex usage limit reached: {message[:300]}"))

    def outcome(self, run: RunOutput) -> Outcome:
        result = self._result(run.exit_code)
        if self.failure is None and self.turns and run.exit_code == 0:
            return Outcome(Verdict.SUCCEEDED, result=result)
        said = self.failure or " | ".join([*self.errors[-2:], *run.stderr_tail[-3:]])
        said = said.strip()[:500]
        if AUTH_TEXT.search(said):
            return Outcome(Verdict.TOKEN_EXPIRED, result=result, reason=f"Codex's credentials were rejected: {said}")
        if USAGE_TEXT.search(said):
            return Outcome(Verdict.USAGE_LIMIT, result=result, reset_at=reset_time(said),
                           reason=f"Codex usage limit reached: {said}")
        if self.failure is not None:
            return Outcome(Verdict.RETRY, result=result, reason=f"the Codex turn failed: {said}")
        reason = f"Codex exited with code {run.exit_code}" + (
            " without finishing its turn" if not self.turns else "")
        return Outcome(Verdict.RETRY, result=result, reason=reason + (f": {said}" if said else ""))

    def _result(self, exit_code: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": self.summary, "cost_usd": None, "usage": self.usage or None,
                               "turns": self.turns, "session_id": self.thread_id}
        if exit_code is not None:
            out["exit_code"] = exit_code
        return out
