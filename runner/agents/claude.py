"""Claude Code (``claude -p … --output-format stream-json``): argv, env, and its stream.

How a run ended is read from the stream, not from the exit code (every failure is exit 1,
a rate limit may be exit 0): the final ``result`` event, ``system/api_retry`` events and
``rate_limit_event``. Observed shapes: docs/agents.md and tests/fixtures/claude/.
"""

from __future__ import annotations

import os
import re
from typing import Any

from runner.agents import validate as check
from runner.agents.base import (Agent, AgentCommand, RunContext, RunOutput, StreamReader,
                                base_env, from_runner_env, json_event)
from runner.agents.limits import from_epoch, reset_time
from runner.render import permission_warnings
from runner.outcome import EarlyStop, Outcome, Verdict

# A rejected or expired credential, in the words Claude Code uses for it.
AUTH_TEXT = re.compile(
    r"invalid api key|invalid x-api-key|oauth token has expired|oauth session expired|"
    r"please run /login|failed to authenticate|authentication_error|not logged in", re.I)
USAGE_TEXT = re.compile(
    r"usage limit reached|(?:you['’]ve |you have )?hit your (?:[\w-]+ )?limit", re.I)


class ClaudeAgent(Agent):
    name = "claude"

    def command(self, ctx: RunContext) -> AgentCommand:
        config, settings = ctx.config, ctx.settings
        argv = [settings.claude_bin, "-p", "--output-format", "stream-json", "--verbose"]
        if config.model:
            argv += ["--model", config.model]
        if config.permission_mode:
            argv += ["--permission-mode", config.permission_mode]
        # Variadic options: each tool its own argument (a rule may hold spaces); the
        # "--" before the prompt ends them, so the prompt is never taken for a tool.
        if config.allowed_tools:
            argv += ["--allowedTools", *config.allowed_tools]
        if config.disallowed_tools:
            argv += ["--disallowedTools", *config.disallowed_tools]
        mcp = config.mcp_config
        if isinstance(mcp, dict):
            argv += ["--mcp-config", str(check.write_private_json(ctx.job_dir / "mcp.json", mcp))]
        elif mcp is not None:
            argv += ["--mcp-config", str(check.mcp_file(mcp, settings))]
        # Only the MCP servers the job or the operator named, never a repository's own.
        argv.append("--strict-mcp-config")
        if config.max_turns is not None:
            argv += ["--max-turns", str(config.max_turns)]
        if config.effort:
            argv += ["--effort", config.effort]
        if rules := check.rules_text(settings):
            argv.append(f"--append-system-prompt={rules}")
        # The prompt is a positional argument: after "--" a prompt that starts with '-'
        # is still the prompt (without it the CLI says "unknown option").
        argv += ["--", ctx.prompt]
        return AgentCommand(argv, claude_env(ctx), ctx.workdir)

    def reader(self) -> StreamReader:
        return ClaudeReader()


def claude_env(ctx: RunContext) -> dict[str, str]:
    """base_env plus exactly one Claude credential, chosen by RUNNER_CLAUDE_CREDENTIAL."""
    env = base_env(ctx)
    choice = ctx.settings.claude_credential
    oauth, api_key = os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"), os.environ.get("ANTHROPIC_API_KEY")
    if oauth and choice in ("auto", "oauth"):
        env["CLAUDE_CODE_OAUTH_TOKEN"] = oauth
    elif api_key and choice in ("auto", "api_key"):
        env["ANTHROPIC_API_KEY"] = api_key
    from_runner_env(env, "ANTHROPIC_BASE_URL", "CLAUDE_CODE_MAX_RETRIES", "IS_SANDBOX")
    env["DISABLE_AUTOUPDATER"] = "1"
    if ctx.settings.claude_disable_nonessential_traffic:
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    return env


class ClaudeReader(StreamReader):
    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.model: str | None = None
        self.session_id: str | None = None
        self.retries: list[dict[str, Any]] = []
        self.rate_limit: dict[str, Any] | None = None
        self.other_stdout: list[str] = []
        # Usage per assistant message id, as the stream reports it (a message's events repeat
        # its usage): added up, it is what was spent even when no result event ever comes.
        self.message_usage: dict[str, dict[str, int]] = {}

    def feed(self, stream: str, line: str) -> None:
        if stream != "stdout":
            return
        event = json_event(line)
        if event is None:
            if line.strip():
                self.other_stdout = (self.other_stdout + [line.strip()])[-5:]
            return
        kind, subtype = event.get("type"), event.get("subtype")
        if kind == "system" and subtype == "init":
            self.model, self.session_id = event.get("model"), event.get("session_id")
        elif kind == "system" and subtype == "api_retry":
            self.retries.append(event)
            if event.get("error_status") == 401 or event.get("error") == "authentication_failed":
                raise EarlyStop(Outcome(
                    Verdict.TOKEN_EXPIRED, result=self._result(None),
                    reason=f"Claude's credentials were rejected (HTTP {event.get('error_status')} "
                           f"{event.get('error')}); the agent was stopped at its first retry"))
        elif kind == "assistant" and isinstance(event.get("message"), dict):
            message = event["message"]
            usage = _usage(message.get("usage"))
            if usage:
                key = str(message.get("id") or len(self.message_usage))
                self.message_usage[key] = usage
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info") or {}
            self.rate_limit = info
            if info.get("status") == "rejected" and not info.get("isUsingOverage"):
                reset = from_epoch(info.get("resetsAt"))
                raise EarlyStop(Outcome(
                    Verdict.USAGE_LIMIT, reset_at=reset, result=self._result(None),
                    reason=f"Claude usage limit reached ({info.get('rateLimitType') or 'limit'})"
                           + (f"; resets at {reset.isoformat()}" if reset else "")))
        elif kind == "result":
            self.result = event
            self.session_id = event.get("session_id") or self.session_id

    def outcome(self, run: RunOutput) -> Outcome:
        res = self.result
        result = self._result(run.exit_code)
        if res is None:
            return self._no_result(run, result)
        text = str(res.get("result") or "").strip()
        errors = res.get("errors") if isinstance(res.get("errors"), list) else []
        detail = "; ".join([text, *map(str, errors)] if text else map(str, errors))[:500]
        subtype, status = res.get("subtype"), res.get("api_error_status")
        if not res.get("is_error") and subtype == "success":
            return Outcome(Verdict.SUCCEEDED, result=result)
        if status == 401 or res.get("api_error_type") == "authentication_error" or AUTH_TEXT.search(text):
            return Outcome(Verdict.TOKEN_EXPIRED, result=result,
                           reason=f"Claude's credentials were rejected: {detail}")
        if res.get("api_error") == "usage_limit_reached" or USAGE_TEXT.search(text):
            reset = from_epoch((self.rate_limit or {}).get("resetsAt")) or reset_time(text)
            return Outcome(Verdict.USAGE_LIMIT, result=result, reset_at=reset,
                           reason=f"Claude usage limit reached: {detail}")
        if subtype == "error_max_turns":
            return Outcome(Verdict.RETRY, result=result,
                           reason=f"the agent used all its turns before finishing ({detail or 'error_max_turns'})")
        if subtype == "error_max_budget_usd":
            return Outcome(Verdict.RETRY, result=result,
                           reason=f"the agent reached its spending budget ({detail or 'error_max_budget_usd'})")
        if status:
            return Outcome(Verdict.RETRY, result=result,
                           reason=f"the Claude API failed with HTTP {status}: {detail}")
        return Outcome(Verdict.RETRY, result=result,
                       reason=f"Claude Code ended with an error ({subtype}): {detail or 'no details'}")

    def _no_result(self, run: RunOutput, result: dict[str, Any]) -> Outcome:
        said = " | ".join(line.strip() for line in [*self.other_stdout, *run.stderr_tail[-5:]]
                          if line.strip())[:500]
        if AUTH_TEXT.search(said):
            return Outcome(Verdict.TOKEN_EXPIRED, result=result,
                           reason=f"Claude's credentials were rejected: {said}")
        if USAGE_TEXT.search(said):
            return Outcome(Verdict.USAGE_LIMIT, result=result, reset_at=reset_time(said),
                           reason=f"Claude usage limit reached: {said}")
        reason = f"Claude Code exited with code {run.exit_code} without a result"
        if self.retries:
            last = self.retries[-1]
            reason += f" after {len(self.retries)} API retries (last: HTTP {last.get('error_status')} {last.get('error')})"
        return Outcome(Verdict.RETRY, result=result, reason=reason + (f": {said}" if said else ""))

    def _result(self, exit_code: int | None) -> dict[str, Any]:
        res = self.result or {}
        out: dict[str, Any] = {
            "summary": res.get("result") if isinstance(res.get("result"), str) else None,
            "cost_usd": res.get("total_cost_usd"),
            "usage": _usage(res.get("usage")) or self.usage_so_far(),
            "turns": res.get("num_turns"),
            "session_id": self.session_id,
            "permission_denials": res.get("permission_denials") or [],
            "model": self.model,
        }
        if warnings := permission_warnings(out["permission_denials"]):
            out["warnings"] = warnings
        if exit_code is not None:
            out["exit_code"] = exit_code
        if res.get("subtype"):
            out["subtype"] = res.get("subtype")
        return out


    def usage_so_far(self) -> dict[str, int] | None:
        """Tokens of every assistant message seen so far (for a run stopped before its result)."""
        if not self.message_usage:
            return None
        total: dict[str, int] = {}
        for usage in self.message_usage.values():
            for k, v in usage.items():
                total[k] = total.get(k, 0) + v
        return total

    def partial_result(self) -> dict[str, Any]:
        return self._result(None)


def _usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return {k: usage[k] for k in keys if isinstance(usage.get(k), int)}
