"""Claude Code (``claude -p … --output-format stream-json``): argv, env, and its stream.

How a run ended is read from the stream, not from the exit code (every failure is exit 1,
a rate limit may be exit 0): the final ``result`` event, ``system/api_retry`` events and
``rate_limit_event``. Observed shapes: docs/agents.md and tests/fixtures/claude/.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from runner import budget, guard
from runner.agents import validate as check
from runner.agents.base import (Agent, AgentCommand, RunContext, RunOutput, StreamReader,
                                base_env, from_runner_env)
from runner.agents.limits import from_epoch, reset_time
from runner.jsonl import json_event
from runner.render import permission_warnings
from runner.outcome import EarlyStop, Outcome, Verdict
from runner.structured import MISSING

# A rejected or expired credential, in the words Claude Code uses for it.
AUTH_TEXT = re.compile(
    r"invalid api key|invalid x-api-key|oauth token has expired|oauth session expired|"
    r"please run /login|failed to authenticate|authentication_error|not logged in", re.I)
# A session id as Claude Code prints it; the value comes from the agent's stream, so only
# this shape ever reaches --resume.
SESSION_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
USAGE_TEXT = re.compile(
    r"usage limit reached|(?:you['’]ve |you have )?hit your (?:[\w-]+ )?limit", re.I)


class ClaudeAgent(Agent):
    name = "claude"

    def resumable(self, job_dir: Path, session_id: str | None) -> bool:
        """The session's transcript is in the job's own config dir (kept across attempts)."""
        if not session_id or not SESSION_ID.match(session_id):
            return False
        projects = config_dir(job_dir) / "projects"
        if not projects.is_dir():
            return False
        # A transcript cut short before the first answer (the CLI killed mid-stream) is not
        # a conversation the CLI can resume: it needs at least one assistant message.
        return any(_has_answer(path) for path in projects.glob(f"*/{session_id}.jsonl"))

    def adopt_session(self, from_job_dir: Path, job_dir: Path, workdir: Path,
                      session_id: str | None) -> bool:
        """The earlier job's transcript, copied (never shared) into this job's config dir,
        under the project directory the CLI looks in for this job's working directory."""
        if not session_id or not SESSION_ID.match(session_id):
            return False
        projects = config_dir(from_job_dir) / "projects"
        if projects.is_symlink() or not projects.is_dir():
            return False
        found = [p for p in projects.glob(f"*/{session_id}.jsonl")
                 if not p.parent.is_symlink() and _has_answer(p)]
        if not found:
            return False
        target = config_dir(job_dir) / "projects" / project_key(workdir)
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:  # the earlier agent wrote it: no link followed, no more than a transcript's size
            fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as src:
                data = src.read(TRANSCRIPT_LIMIT + 1)
        except OSError:
            return False
        if len(data) > TRANSCRIPT_LIMIT:
            return False
        (target / f"{session_id}.jsonl").write_bytes(data)
        return True

    def command(self, ctx: RunContext) -> AgentCommand:
        config, settings = ctx.config, ctx.settings
        argv = [settings.claude_bin, "-p", "--output-format", "stream-json", "--verbose"]
        if ctx.resume_session and SESSION_ID.match(ctx.resume_session):
            argv += ["--resume", ctx.resume_session]
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
        if config.output_schema is not None:
            # The CLI adds a StructuredOutput tool; its answer is the result's structured_output
            # (checked again by runner/structured.py). At most 64 KiB: fits one argument.
            argv += ["--json-schema", json.dumps(config.output_schema, separators=(",", ":"))]
        if config.effort:
            argv += ["--effort", config.effort]
        # The CLI stops itself at the dollar budget (it knows the prices); the runner's
        # own check from the stream (runner/budget.py) is the backstop and counts tokens.
        if (usd := budget.limits(config, settings).max_budget_usd) is not None:
            argv += ["--max-budget-usd", f"{usd:.4f}".rstrip("0").rstrip(".")]
        if rules := check.rules_text(settings):
            # By file, not in argv: a command line is visible to every process (ps).
            path = ctx.job_dir / "agent-rules.md"
            path.write_text(rules, encoding="utf-8")
            path.chmod(0o644)  # the agent's own uid reads it
            argv += ["--append-system-prompt-file", str(path)]
        # The prompt is a positional argument: after "--" a prompt that starts with '-'
        # is still the prompt (without it the CLI says "unknown option").
        argv += ["--", ctx.prompt]
        return AgentCommand(argv, claude_env(ctx), ctx.workdir)

    def reader(self) -> StreamReader:
        return ClaudeReader()


def config_dir(job_dir: Path) -> Path:
    """The CLI's config dir of one job, in the agent's HOME in the job directory: its
    session files stay there across attempts, so a later attempt can --resume."""
    return job_dir / "home" / ".claude"


TRANSCRIPT_LIMIT = 64 << 20


def project_key(workdir: Path) -> str:
    """The CLI's name for a working directory under ``projects/`` (every character but
    letters and digits as '-')."""
    return re.sub(r"[^A-Za-z0-9]", "-", os.path.realpath(workdir))


def _has_answer(transcript: Path, limit: int = TRANSCRIPT_LIMIT) -> bool:
    try:
        with open(transcript, "rb") as fh:
            return b'"type":"assistant"' in fh.read(limit).replace(b'": "', b'":"')
    except OSError:
        return False


def claude_env(ctx: RunContext) -> dict[str, str]:
    """base_env plus exactly one Claude credential, chosen by RUNNER_CLAUDE_CREDENTIAL."""
    env = base_env(ctx)
    choice = ctx.settings.claude_credential
    oauth, api_key = os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"), os.environ.get("ANTHROPIC_API_KEY")
    if oauth and choice in ("auto", "oauth"):
        env["CLAUDE_CODE_OAUTH_TOKEN"] = oauth
    elif api_key and choice in ("auto", "api_key"):
        env["ANTHROPIC_API_KEY"] = api_key
    if "CLAUDE_CODE_OAUTH_TOKEN" in env or "ANTHROPIC_API_KEY" in env or ctx.settings.agent.isolated:
        # Sessions per job. Not when the CLI's only credential is a login stored in the
        # runner's own ~/.claude: a config dir of its own would not have it.
        sessions = config_dir(ctx.job_dir)
        sessions.mkdir(mode=0o700, parents=True, exist_ok=True)
        env["CLAUDE_CONFIG_DIR"] = str(sessions)
    if ctx.settings.claude_max_retries is not None:
        # The CLI's own retries of an overloaded API (the runner's guard counts the runs
        # that still fail after them); CLAUDE_CODE_MAX_RETRIES in the runner's env wins.
        env["CLAUDE_CODE_MAX_RETRIES"] = str(ctx.settings.claude_max_retries)
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
        self.structured_output: Any = MISSING
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
            # With --json-schema: the agent's answer (absent when it gave none).
            self.structured_output = event.get("structured_output", MISSING)

    def finished(self) -> bool:
        return self.result is not None

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
        if guard.overloaded(status) or res.get("api_error_type") == "overloaded_error":
            # Not the job's fault: handed back refunded, and counted by runner/guard.py.
            return Outcome(Verdict.OVERLOADED, result=result,
                           reason=f"the Claude API is overloaded (HTTP {status}): {detail}")
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
        verdict = Verdict.RETRY
        if self.retries:
            last = self.retries[-1]
            reason += f" after {len(self.retries)} API retries (last: HTTP {last.get('error_status')} {last.get('error')})"
            if guard.overloaded(last.get("error_status")):
                verdict = Verdict.OVERLOADED
        return Outcome(verdict, result=result, reason=reason + (f": {said}" if said else ""))

    def _result(self, exit_code: int | None) -> dict[str, Any]:
        res = self.result or {}
        out: dict[str, Any] = {
            "summary": res.get("result") if isinstance(res.get("result"), str) else None,
            "cost_usd": res.get("total_cost_usd"),
            # The result's own usage is its last turn's; modelUsage has the whole run.
            "usage": _model_usage(res.get("modelUsage")) or _usage(res.get("usage"))
                     or self.usage_so_far(),
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


_MODEL_USAGE_KEYS = {"inputTokens": "input_tokens", "outputTokens": "output_tokens",
                     "cacheCreationInputTokens": "cache_creation_input_tokens",
                     "cacheReadInputTokens": "cache_read_input_tokens"}


def _model_usage(per_model: Any) -> dict[str, int] | None:
    """The result's ``modelUsage`` ({model: {inputTokens, …}}) added up over models."""
    if not isinstance(per_model, dict):
        return None
    total: dict[str, int] = {}
    for usage in per_model.values():
        if not isinstance(usage, dict):
            continue
        for theirs, ours in _MODEL_USAGE_KEYS.items():
            if isinstance(usage.get(theirs), int):
                total[ours] = total.get(ours, 0) + usage[theirs]
    return total or None


def _usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return {k: usage[k] for k in keys if isinstance(usage.get(k), int)}
