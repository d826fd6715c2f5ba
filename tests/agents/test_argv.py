"""Argument vectors and environments built from a job's config, and every rejection."""

from __future__ import annotations

import json
import os
import stat

import pytest

from runner.agents import select_agent
from runner.errors import InvalidAgentConfig

FULL = {
    "agent": "claude", "model": "claude-sonnet-4-5", "permission_mode": "acceptEdits",
    "allowed_tools": ["Write", "Bash(git diff:*)", "mcp__github__create_issue"],
    "disallowed_tools": ["WebFetch"], "max_turns": 12, "effort": "high",
}


def _command(make_settings, make_ctx, config, prompt="Fix the bug.", **settings):
    s = make_settings(**settings)
    agent = select_agent(config, s)
    ctx = make_ctx(s, config, prompt)
    return agent.command(ctx), ctx


def test_claude_argv_from_every_key(make_settings, make_ctx) -> None:
    cmd, ctx = _command(make_settings, make_ctx, FULL, claude_bin="/opt/claude")
    rules = "# Agent rules\nRULES-MARKER-7f3a: never push to main.\n"
    assert cmd.argv == [
        "/opt/claude", "-p", "--output-format", "stream-json", "--verbose",
        "--model", "claude-sonnet-4-5", "--permission-mode", "acceptEdits",
        "--allowedTools", "Write", "Bash(git diff:*)", "mcp__github__create_issue",
        "--disallowedTools", "WebFetch", "--strict-mcp-config", "--max-turns", "12",
        "--effort", "high", "--append-system-prompt-file", str(ctx.job_dir / "agent-rules.md"),
        "--", "Fix the bug.",
    ]
    assert (ctx.job_dir / "agent-rules.md").read_text() == rules
    assert not any(rules in a for a in cmd.argv), "the rules are not on the command line"
    assert cmd.cwd == ctx.workdir


def test_claude_minimal_and_dash_prompt(make_settings, make_ctx) -> None:
    cmd, _ = _command(make_settings, make_ctx, {"agent": "claude"}, prompt="--help me",
                      agent_rules_file=None)
    assert cmd.argv == ["claude", "-p", "--output-format", "stream-json", "--verbose",
                        "--strict-mcp-config", "--", "--help me"]


def test_mcp_config_object_is_written_private(make_settings, make_ctx) -> None:
    servers = {"mcpServers": {"files": {"command": "mcp-files", "args": ["--root", "."]}}}
    cmd, ctx = _command(make_settings, make_ctx, {"agent": "claude", "mcp_config": servers})
    path = ctx.job_dir / "mcp.json"
    assert cmd.argv[cmd.argv.index("--mcp-config") + 1] == str(path)
    assert json.loads(path.read_text()) == servers
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_mcp_config_by_name(make_settings, make_ctx, tmp_path) -> None:
    (tmp_path / "mcp").mkdir()
    (tmp_path / "mcp" / "github.json").write_text('{"mcpServers": {}}')
    cmd, _ = _command(make_settings, make_ctx, {"agent": "claude", "mcp_config": "github.json"},
                      mcp_config_dir=tmp_path / "mcp")
    assert cmd.argv[cmd.argv.index("--mcp-config") + 1] == str(tmp_path / "mcp" / "github.json")
    with pytest.raises(InvalidAgentConfig, match="not a file in RUNNER_MCP_CONFIG_DIR"):
        select_agent({"agent": "claude", "mcp_config": "other.json"}, make_settings(mcp_config_dir=tmp_path / "mcp"))
    with pytest.raises(InvalidAgentConfig, match="has not set RUNNER_MCP_CONFIG_DIR"):
        select_agent({"agent": "claude", "mcp_config": "github.json"}, make_settings())


BAD = [
    ("model", "-rf", "config.model must be a model name"),
    ("model", "a b", "config.model must be a model name"),
    ("model", "x" * 101, "config.model must be a model name"),
    ("model", 5, "config.model must be a model name"),
    ("permission_mode", "yolo", "config.permission_mode must be one of"),
    ("permission_mode", "bypassPermissions", "is not allowed here (RUNNER_ALLOWED_PERMISSION_MODES=default,acceptEdits,plan)"),
    ("allowed_tools", "Write", "must be a list of tool names"),
    ("allowed_tools", ["--dangerously-skip-permissions"], "invalid tool '--dangerously-skip-permissions'"),
    ("allowed_tools", ["Bash(ls)\nrm"], "invalid tool"),
    ("allowed_tools", ["Write", 3], "invalid tool 3"),
    ("disallowed_tools", ["-x"], "config.disallowed_tools has an invalid tool '-x'"),
    ("allowed_tools", ["Edit"] * 101, "at most 100"),
    ("effort", "extreme", "config.effort must be one of low, medium, high, xhigh, max"),
    ("max_turns", 0, "config.max_turns must be a whole number from 1 to 500, got 0"),
    ("max_turns", 501, "got 501"),
    ("max_turns", True, "got True"),
    ("max_turns", "5", "got '5'"),
    ("mcp_config", "../etc/passwd", "must be a file name inside RUNNER_MCP_CONFIG_DIR"),
    ("mcp_config", {"servers": {}}, '"mcpServers"'),
    ("mcp_config", {"mcpServers": {"-x": {}}}, "invalid entry '-x'"),
    ("mcp_config", 7, "must be an object or a file name"),
]


@pytest.mark.parametrize("key, value, message", BAD, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD)])
def test_claude_rejects(make_settings, key, value, message, tmp_path) -> None:
    settings = make_settings(mcp_config_dir=tmp_path) if key == "mcp_config" and isinstance(value, str) else make_settings()
    with pytest.raises(InvalidAgentConfig) as err:
        select_agent({"agent": "claude", key: value}, settings)
    assert message in str(err.value)


def test_bypass_permissions_only_when_listed(make_settings, make_ctx) -> None:
    cmd, _ = _command(make_settings, make_ctx, {"agent": "claude", "permission_mode": "bypassPermissions"},
                      allowed_permission_modes="acceptEdits,bypassPermissions")
    assert ["--permission-mode", "bypassPermissions"] == cmd.argv[5:7]


def test_agents_must_be_allowed(make_settings) -> None:
    with pytest.raises(InvalidAgentConfig, match="not allowed here"):
        select_agent({"agent": "codex"}, make_settings(allowed_agents="claude"))


SECRETS = {
    "DATABASE_URL": "postgresql://u:dbpass@h/db", "RUNNER_GIT_TOKEN": "ghp_gittoken123",
    "RUNNER_DATABASE_URL": "postgresql://x", "PGPASSWORD": "pgpass123",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-1", "ANTHROPIC_API_KEY": "sk-ant-api-key-1",
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat-token-1", "OPENAI_API_KEY": "sk-openai-1",
    "CODEX_API_KEY": "codex-key-1", "GEMINI_API_KEY": "gemini-key-1", "GOOGLE_API_KEY": "google-key-1",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "GITHUB_TOKEN": "ghp_other",
}
OWN = {
    "claude": {"CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_BASE_URL"},
    "codex": {"OPENAI_API_KEY", "CODEX_API_KEY"},
    "gemini": {"GEMINI_API_KEY", "GOOGLE_API_KEY"},
}


@pytest.mark.parametrize("agent", sorted(OWN))
def test_env_has_only_the_agents_own_credentials(make_settings, make_ctx, monkeypatch, agent) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    cmd, _ = _command(make_settings, make_ctx, {"agent": agent, "env": {"APP_MODE": "test"}})
    assert {k for k in SECRETS if k in cmd.env} == OWN[agent]
    leaked = [v for k, v in SECRETS.items() if k not in OWN[agent] and v in json.dumps(cmd.env)]
    assert leaked == []
    assert cmd.env["APP_MODE"] == "test" and cmd.env["GIT_TERMINAL_PROMPT"] == "0"


@pytest.mark.parametrize("choice, present, absent", [
    ("auto", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY"),
    ("oauth", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY"),
    ("api_key", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"),
])
def test_claude_credential_choice(make_settings, make_ctx, monkeypatch, choice, present, absent) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api-key-1")
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat-token-1")
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    cmd, _ = _command(make_settings, make_ctx, {"agent": "claude"}, claude_credential=choice)
    assert present in cmd.env and absent not in cmd.env
    assert cmd.env["DISABLE_AUTOUPDATER"] == "1"
    assert cmd.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert "IS_SANDBOX" not in cmd.env


def test_claude_api_key_alone_and_operator_switches(make_settings, make_ctx, monkeypatch) -> None:
    monkeypatch.delenv("CLAUDE_CODE_OAUTH_TOKEN", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api-key-1")
    monkeypatch.setenv("IS_SANDBOX", "1")
    cmd, _ = _command(make_settings, make_ctx, {"agent": "claude"},
                      claude_disable_nonessential_traffic=False)
    assert cmd.env["ANTHROPIC_API_KEY"] == "sk-ant-api-key-1" and cmd.env["IS_SANDBOX"] == "1"
    assert "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC" not in cmd.env
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    cmd, _ = _command(make_settings, make_ctx, {"agent": "claude"}, claude_credential="oauth")
    assert "ANTHROPIC_API_KEY" not in cmd.env and "CLAUDE_CODE_OAUTH_TOKEN" not in cmd.env


@pytest.mark.parametrize("name", ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "DATABASE_URL",
                                  "RUNNER_GIT_TOKEN", "OPENAI_API_KEY", "GIT_SSH_COMMAND", "LD_PRELOAD"])
def test_job_env_cannot_set_controlled_names(make_settings, make_ctx, name) -> None:
    s = make_settings()
    config = {"agent": "claude", "env": {name: "x"}}
    with pytest.raises(InvalidAgentConfig, match="the runner controls it"):
        select_agent(config, s).command(make_ctx(s, config))


def test_codex_argv(make_settings, make_ctx) -> None:
    config = {"agent": "codex", "model": "gpt-5-codex", "permission_mode": "acceptEdits", "effort": "high"}
    cmd, ctx = _command(make_settings, make_ctx, config, codex_bin="/opt/codex", agent_rules_file=None)
    assert cmd.argv == ["/opt/codex", "exec", "--json", "--color", "never", "--skip-git-repo-check",
                        "-C", str(ctx.workdir), "--model", "gpt-5-codex", "--sandbox", "workspace-write",
                        "-c", 'model_reasoning_effort="high"', "--", "Fix the bug."]
    cmd, _ = _command(make_settings, make_ctx, {"agent": "codex", "permission_mode": "plan"})
    assert cmd.argv[cmd.argv.index("--sandbox") + 1] == "read-only"
    assert cmd.argv[-1].startswith("<runner-rules>\n# Agent rules\nRULES-MARKER-7f3a")
    assert cmd.argv[-1].endswith("</runner-rules>\n\nFix the bug.")
    cmd, _ = _command(make_settings, make_ctx, {"agent": "codex", "permission_mode": "bypassPermissions"},
                      allowed_permission_modes="bypassPermissions")
    assert "--dangerously-bypass-approvals-and-sandbox" in cmd.argv and "--sandbox" not in cmd.argv


def test_gemini_argv(make_settings, make_ctx) -> None:
    config = {"agent": "gemini", "model": "gemini-2.5-pro", "permission_mode": "acceptEdits"}
    cmd, _ = _command(make_settings, make_ctx, config, gemini_bin="/opt/gemini", agent_rules_file=None,
                      prompt="-x starts with a dash")
    assert cmd.argv == ["/opt/gemini", "--output-format", "stream-json", "--skip-trust",
                        "--model", "gemini-2.5-pro", "--approval-mode", "auto_edit",
                        "--prompt=-x starts with a dash"]


@pytest.mark.parametrize("agent, key, value, message", [
    ("codex", "allowed_tools", ["Write"], "config.allowed_tools is not supported for agent 'codex'"),
    ("codex", "max_turns", 3, "config.max_turns is not supported for agent 'codex'"),
    ("codex", "mcp_config", {"mcpServers": {}}, "config.mcp_config is not supported"),
    ("codex", "effort", "max", "config.effort must be one of minimal, low, medium, high, xhigh"),
    ("codex", "permission_mode", "dontAsk", "must be one of plan, default, acceptEdits, bypassPermissions"),
    ("gemini", "disallowed_tools", ["Shell"], "config.disallowed_tools is not supported for agent 'gemini'"),
    ("gemini", "effort", "high", "config.effort is not supported for agent 'gemini'"),
    ("gemini", "model", "--yolo", "config.model must be a model name"),
])
def test_codex_gemini_reject(make_settings, agent, key, value, message) -> None:
    with pytest.raises(InvalidAgentConfig) as err:
        select_agent({"agent": agent, key: value}, make_settings())
    assert message in str(err.value)


def test_codex_refuses_the_stdin_prompt(make_settings, make_ctx) -> None:
    s = make_settings(agent_rules_file=None)
    with pytest.raises(InvalidAgentConfig, match="prompt '-'"):
        select_agent({"agent": "codex"}, s).command(make_ctx(s, {"agent": "codex"}, prompt="-"))


def test_argv_never_carries_a_job_value_as_an_option(make_settings, make_ctx) -> None:
    """Each job value sits after its option, after '--', or inside '--prompt='."""
    cmd, _ = _command(make_settings, make_ctx, FULL, prompt="-rf /")
    assert cmd.argv[-2:] == ["--", "-rf /"]
    assert not any(a.startswith("-") and a not in _KNOWN for a in cmd.argv[1:-1])


_KNOWN = {"-p", "--output-format", "--verbose", "--model", "--permission-mode", "--allowedTools",
          "--disallowedTools", "--strict-mcp-config", "--max-turns", "--effort", "--mcp-config",
          "--append-system-prompt-file", "--"}


SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string"}}, "required": ["verdict"]}


def test_an_output_schema_is_given_to_claude_and_to_codex(make_settings, make_ctx) -> None:
    import json
    cmd, _ = _command(make_settings, make_ctx, {"agent": "claude", "output_schema": SCHEMA})
    assert json.loads(cmd.argv[cmd.argv.index("--json-schema") + 1]) == SCHEMA
    assert cmd.argv.index("--json-schema") < cmd.argv.index("--")
    cmd, ctx = _command(make_settings, make_ctx, {"agent": "codex", "output_schema": SCHEMA})
    path = cmd.argv[cmd.argv.index("--output-schema") + 1]
    assert path == str(ctx.job_dir / "output-schema.json") and json.loads(open(path).read()) == SCHEMA
