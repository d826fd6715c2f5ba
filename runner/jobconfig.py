"""A job's ``config``: its one typed definition, parsed once before anything happens.

The web app writes ``jobs.config`` as JSON; this model is the only place that says what
each key means and which values it takes. From it come:

* ``parse`` — the runner's check at claim time (and the client's at enqueue time): a bad
  value raises ``InvalidAgentConfig`` with a sentence naming the key and what was expected,
  and the job ends ``failed`` with it;
* ``json_schema`` — the published JSON Schema (docs/job-config.schema.json, ``runner schema``);
* the adapters' argv: they read the parsed model and check nothing themselves.

What depends on the operator (RUNNER_ALLOWED_AGENTS, RUNNER_ALLOWED_PERMISSION_MODES,
RUNNER_MCP_CONFIG_DIR) is not part of the model: a job that is well formed here can still
be refused by one worker's allowlists when it is claimed (runner/agents/__init__.py).

Keys the runner does not know are kept and ignored: a web app may keep its own notes in
config, and the test agent reads its script from ``config.fake``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from runner.errors import InvalidAgentConfig

AGENTS = ("claude", "codex", "gemini", "stub", "command")
# The runner's permission vocabulary (Claude Code 2.1.x's own); other agents map a subset.
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "manual",
                    "auto")
CLAUDE_EFFORTS = ("low", "medium", "high", "xhigh", "max")
CODEX_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
EFFORTS = ("minimal", "low", "medium", "high", "xhigh", "max")

JOB_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
MODEL = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$"
# A tool name (Write, mcp__server__tool, Bash) with an optional rule in parentheses:
# Bash(git diff:*), Read(./src/**), WebFetch(domain:example.com).
TOOL = r"^[A-Za-z][A-Za-z0-9_-]{0,127}(\([^()\x00-\x1f\x7f]{1,300}\))?$"
MAX_TOOLS = 100
MAX_MCP_CONFIG_BYTES = 64 * 1024
MAX_BUDGET_USD = 10_000.0  # dollars an attempt may ask for at most
MAX_TOKENS = 1_000_000_000
MCP_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_VERIFY_COMMANDS = 20
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,100}$"
# Per-job env may not touch these: the runner's settings and secrets, the database, the
# loader, git's config injection points, or the agent's credentials and endpoint.
FORBIDDEN_ENV = re.compile(
    r"^(RUNNER_.*|DATABASE_URL|PG[A-Z]*|LD_.*|DYLD_.*|PYTHON(PATH|HOME|STARTUP)|GIT_.*|"
    r"ANTHROPIC_.*|CLAUDE_.*|OPENAI_.*|CODEX_.*|GEMINI_.*|GOOGLE_.*|PATH|HOME|SSH_.*|"
    r"BASH_ENV|ENV|IFS|NODE_OPTIONS)$"
)


@dataclass(frozen=True)
class AgentKeys:
    """What one agent's CLI can honour: the others are refused, not ignored (a
    disallowed_tools that silently did nothing would not be the job the web app asked for)."""

    permission_modes: tuple[str, ...] | None = None  # None: any of PERMISSION_MODES
    efforts: tuple[str, ...] | None = None
    unsupported: tuple[str, ...] = ()


# stub and command run no vendor CLI: the agent keys mean nothing to them, and an output
# schema could never be met.
AGENT_KEYS: dict[str, AgentKeys] = {
    "claude": AgentKeys(PERMISSION_MODES, CLAUDE_EFFORTS),
    # permission_mode → codex sandbox; gemini → --approval-mode (runner/agents/*.py).
    "codex": AgentKeys(("plan", "default", "acceptEdits", "bypassPermissions"), CODEX_EFFORTS,
                       ("allowed_tools", "disallowed_tools", "max_turns", "mcp_config")),
    # Gemini's CLI has no structured output (docs/agents.md).
    "gemini": AgentKeys(("default", "acceptEdits", "bypassPermissions", "plan"), None,
                        ("allowed_tools", "disallowed_tools", "effort", "max_turns", "mcp_config",
                         "output_schema")),
    "stub": AgentKeys(unsupported=("output_schema",)),
    "command": AgentKeys(unsupported=("output_schema",)),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Sentence(ValueError):
    """A validator's own message, used as it is (it already names the key)."""


def _expect(expected: str, item: str | None = None) -> dict[str, Any]:
    """The words for "what was expected", kept in the schema next to the key (and used for
    the sentence of a bad value): ``config.<key> must be <expected>, got <value>``."""
    extra: dict[str, Any] = {"x-expected": expected}
    if item:
        extra["x-expected-item"] = item
    return extra


def _agent(value: Any) -> Any:
    if value is None:
        raise Sentence("config.agent must be a string, got NoneType")
    if not isinstance(value, str):
        raise Sentence(f"config.agent must be a string, got {type(value).__name__}")
    if value not in AGENTS:
        raise Sentence(f"unknown agent {value[:60]!r}; known agents: {', '.join(sorted(AGENTS))}")
    return value


def _env(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Sentence("config.env must be an object of NAME: value strings")
    out: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not re.match(ENV_NAME, name):
            raise Sentence(f"config.env has an invalid variable name {str(name)[:60]!r}")
        if FORBIDDEN_ENV.match(name):
            raise Sentence(f"config.env may not set {name}: the runner controls it")
        if not isinstance(item, (str, int, float, bool)) or "\x00" in str(item):
            raise Sentence(f"config.env.{name} must be a string")
        out[name] = str(item)
    return out


def _verify(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_VERIFY_COMMANDS:
        raise Sentence(f"config.verify must be a list of at most {MAX_VERIFY_COMMANDS} commands")
    for i, item in enumerate(value):
        if isinstance(item, str):
            try:
                argv = shlex.split(item)
            except ValueError as exc:
                raise Sentence(f"config.verify[{i}] cannot be split: {exc}") from None
        elif isinstance(item, list) and all(isinstance(a, str) for a in item):
            argv = list(item)
        else:
            raise Sentence(f"config.verify[{i}] must be a string or a list of strings")
        if not argv or any("\0" in a for a in argv) or sum(map(len, argv)) > 10000:
            raise Sentence(f"config.verify[{i}] is empty, too long or contains NUL")
    return value


def _mcp_config(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        servers = value.get("mcpServers")
        if not isinstance(servers, dict):
            raise Sentence('config.mcp_config must be an object with "mcpServers": {name: server}')
        for name, server in servers.items():
            if not re.match(MCP_NAME, name) or not isinstance(server, dict):
                raise Sentence(f"config.mcp_config.mcpServers has an invalid entry {_show(name)}")
        if len(json.dumps(value)) > MAX_MCP_CONFIG_BYTES:
            raise Sentence(f"config.mcp_config is larger than {MAX_MCP_CONFIG_BYTES} bytes")
        return value
    if isinstance(value, str):
        if not re.match(MCP_NAME, value):
            raise Sentence(f"config.mcp_config must be a file name inside RUNNER_MCP_CONFIG_DIR, "
                           f"got {_show(value)}")
        return value
    raise Sentence(f"config.mcp_config must be an object or a file name, got {type(value).__name__}")


def _output_schema(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Sentence(f"config.output_schema must be a JSON Schema object, got {type(value).__name__}")
    # Checked as a JSON Schema here; the answer is checked against it by runner/structured.py.
    kind = value.get("type", "object")
    kinds = kind if isinstance(kind, list) else [kind]
    if not kinds or any(k not in _JSON_TYPES for k in kinds):
        raise Sentence(f"config.output_schema has an invalid \"type\" {_show(kind)}: expected one "
                       f"of {', '.join(_JSON_TYPES)}")
    if len(json.dumps(value)) > MAX_MCP_CONFIG_BYTES:
        raise Sentence(f"config.output_schema is larger than {MAX_MCP_CONFIG_BYTES} bytes")
    from runner.structured import schema_problem  # jsonschema, only for a job that has one
    if (problem := schema_problem(value)) is not None:
        raise Sentence(f"config.output_schema is not a valid JSON Schema: {problem}")
    return value


_JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


Tool = Annotated[str, Field(pattern=TOOL)]
Tools = Annotated[list[Tool] | None, Field(default=None, max_length=MAX_TOOLS)]
_TOOLS_EXPECTED = f'a list of tool names like ["Edit", "Bash(git diff:*)"] (at most {MAX_TOOLS})'
_TOOL_ITEM = ("a name like Edit, mcp__server__tool or Bash(git diff:*) (no leading '-', "
              "no control characters)")


class JobConfig(BaseModel):
    """``jobs.config``: how the agent runs a job. Every key is optional."""

    # strict: "5" is not 5 and true is not 1 — the value a web app sent is the one it gets.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True,
                              title="runner job config")

    agent: Annotated[Literal["claude", "codex", "gemini", "stub", "command"] | None,
                     BeforeValidator(_agent)] = Field(
        None, description="The agent that runs the job; default RUNNER_DEFAULT_AGENT. Must be in "
                          "the worker's RUNNER_ALLOWED_AGENTS.",
        json_schema_extra=_expect("one of " + ", ".join(AGENTS)))
    model: str | None = Field(
        None, pattern=MODEL, description="The model name passed to the agent's --model.",
        json_schema_extra=_expect("a model name (letters, digits and . _ : / @ -, at most 100 "
                                  "characters, not starting with '-')"))
    permission_mode: Literal[PERMISSION_MODES] | None = Field(  # type: ignore[valid-type]
        None, description="claude: --permission-mode; codex: sandbox (plan → read-only, default/"
                          "acceptEdits → workspace-write, bypassPermissions → no sandbox); gemini: "
                          "--approval-mode. Must be in the worker's RUNNER_ALLOWED_PERMISSION_MODES.",
        json_schema_extra=_expect("one of " + ", ".join(PERMISSION_MODES)))
    allowed_tools: Tools = Field(
        None, description="claude only: --allowedTools, one tool spec per item.",
        json_schema_extra=_expect(_TOOLS_EXPECTED, _TOOL_ITEM))
    disallowed_tools: Tools = Field(
        None, description="claude only: --disallowedTools, one tool spec per item.",
        json_schema_extra=_expect(_TOOLS_EXPECTED, _TOOL_ITEM))
    effort: Literal[EFFORTS] | None = Field(  # type: ignore[valid-type]
        None, description="claude: --effort (low, medium, high, xhigh, max); codex: "
                          "model_reasoning_effort (minimal, low, medium, high, xhigh).",
        json_schema_extra=_expect("one of " + ", ".join(EFFORTS)))
    max_turns: int | None = Field(
        None, ge=1, le=500, description="claude only: --max-turns.",
        json_schema_extra=_expect("a whole number from 1 to 500"))
    mcp_config: Annotated[dict[str, Any] | Annotated[str, Field(pattern=MCP_NAME)] | None,
                          BeforeValidator(_mcp_config)] = Field(
        None, description='claude only: {"mcpServers": {name: server}} (at most 64 KiB, written '
                          "to a private file for --mcp-config), or the name of a file in the "
                          "operator's RUNNER_MCP_CONFIG_DIR.",
        json_schema_extra=_expect('an object {"mcpServers": {…}} or a file name'))
    timeout_s: int | None = Field(
        None, ge=1, le=7 * 86400, description="Seconds before the runner stops the agent; "
                                              "default RUNNER_JOB_TIMEOUT_SECONDS.",
        json_schema_extra=_expect("a whole number of seconds from 1 to 604800"))
    env: Annotated[dict[Annotated[str, Field(pattern=ENV_NAME)], str] | None,
                   BeforeValidator(_env)] = Field(
        None, description="Extra environment variables for the agent. Names of the runner, the "
                          "database, the loader, git and every agent credential are refused.",
        json_schema_extra=_expect("an object of NAME: value strings"))
    verify: Annotated[list[str | list[str]] | None, BeforeValidator(_verify)] = Field(
        None, max_length=MAX_VERIFY_COMMANDS,
        description="Commands run in the worktree after the agent succeeds (a string is split "
                    "like a shell would, without a shell); any failure fails the attempt.",
        json_schema_extra=_expect(f"a list of at most {MAX_VERIFY_COMMANDS} commands"))
    verify_timeout_s: int | None = Field(
        None, ge=1, le=86400, description="Seconds for each verify command; default "
                                          "RUNNER_VERIFY_TIMEOUT_SECONDS.",
        json_schema_extra=_expect("whole seconds from 1 to 86400"))
    push: bool = Field(
        False, description="Push the job's branch to the remote after success (needs repo_url).",
        json_schema_extra=_expect("true or false"))
    commit_leftovers: bool = Field(
        True, description="Commit what the agent left uncommitted in the worktree when it ends, "
                          "so no work is lost.",
        json_schema_extra=_expect("true or false"))
    on_retry: Literal["continue", "restart"] = Field(
        "continue", description="A retried attempt starts from the previous attempt's work "
                                "(continue) or from the base ref again (restart).",
        json_schema_extra=_expect("one of continue, restart"))
    max_budget_usd: float | None = Field(
        None, gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False,
        description="The most one attempt may spend, in US dollars (RUNNER_MAX_BUDGET_USD "
                    "caps it).",
        json_schema_extra=_expect(f"a number of US dollars above 0 and at most {MAX_BUDGET_USD:g}"))
    max_tokens: int | None = Field(
        None, gt=0, le=MAX_TOKENS, description="The most tokens one attempt may use.",
        json_schema_extra=_expect(f"a whole number from 1 to {MAX_TOKENS}"))
    output_schema: Annotated[dict[str, Any] | None, BeforeValidator(_output_schema)] = Field(
        None, description="A JSON Schema the agent's final answer must match; the answer is "
                          "stored in result.structured.",
        json_schema_extra=_expect("a JSON Schema object"))
    continue_from: str | None = Field(
        None, pattern=JOB_ID,
        description="A job id: this job starts from that job's branch head, on its branch unless "
                    "this job's branch names another, and claude resumes that job's session when "
                    "its files are on this host. Implies depends_on on that job (it must succeed "
                    "first).",
        json_schema_extra=_expect("a job id (a UUID)"))

    @field_validator("push", "commit_leftovers", "on_retry", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: Any) -> Any:
        # A JSON null means "not given" for every key, as for the optional ones.
        return cls.model_fields[info.field_name].default if value is None else value

    @model_validator(mode="after")
    def _agent_can_honour_it(self, info: Any) -> "JobConfig":
        default = (info.context or {}).get("default_agent", "claude")
        name = self.agent or default
        keys = AGENT_KEYS.get(name, AgentKeys())
        for key in keys.unsupported:
            if getattr(self, key) not in (None, [], {}):
                raise Sentence(f"config.{key} is not supported for agent {name!r}")
        if keys.permission_modes and self.permission_mode and self.permission_mode not in keys.permission_modes:
            raise Sentence(f"config.permission_mode must be one of {', '.join(keys.permission_modes)}, "
                           f"got {_show(self.permission_mode)}")
        if keys.efforts and self.effort and self.effort not in keys.efforts:
            raise Sentence(f"config.effort must be one of {', '.join(keys.efforts)}, got {_show(self.effort)}")
        return self

    def agent_name(self, default_agent: str) -> str:
        return self.agent or default_agent


def parse(config: Any, default_agent: str = "claude") -> JobConfig:
    """The job's config as a ``JobConfig``, or ``InvalidAgentConfig`` with one sentence."""
    if isinstance(config, JobConfig):
        return config
    if not isinstance(config, dict):
        raise InvalidAgentConfig(f"config must be a JSON object, got {type(config).__name__}")
    try:
        return JobConfig.model_validate(config, context={"default_agent": default_agent})
    except ValidationError as exc:
        raise InvalidAgentConfig(sentence(exc, config, default_agent)) from None


def sentence(exc: ValidationError, config: dict[str, Any], default_agent: str = "claude") -> str:
    """The first problem, in words: the key, what it must be, what it was."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, Sentence):
        return str(cause)
    loc = error["loc"]
    key = str(loc[0]) if loc else ""
    keys = AGENT_KEYS.get(str(config.get("agent") or default_agent), AgentKeys())
    choices = {"effort": keys.efforts, "permission_mode": keys.permission_modes}.get(key)
    if choices:  # the agent's own choices, not every agent's
        return f"config.{key} must be one of {', '.join(choices)}, got {_show(config.get(key))}"
    field = JobConfig.model_fields.get(key)
    extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
    if len(loc) > 1 and isinstance(loc[1], int) and extra.get("x-expected-item"):
        return (f"config.{key} has an invalid tool {_show(error.get('input'))}: expected "
                f"{extra['x-expected-item']}")
    if "x-expected" in extra:
        return f"config.{key} must be {extra['x-expected']}, got {_show(config.get(key))}"
    return f"config.{'.'.join(map(str, loc))}: {error['msg']}"


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of a job's config (docs/job-config.schema.json)."""
    schema = JobConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
