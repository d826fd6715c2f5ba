"""Checks for the agent keys of a job's config, shared by the vendor adapters.

Every value a job gives is checked before anything is spawned; a bad one raises
``InvalidAgentConfig`` with a sentence naming the key, what was given and what is allowed,
and the job ends ``failed`` with it. Nothing from a job may ever be read as an option.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from runner.errors import InvalidAgentConfig, IterationError
from runner.settings import Settings

MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$")
# A tool name (Write, mcp__server__tool, Bash) with an optional rule in parentheses:
# Bash(git diff:*), Read(./src/**), WebFetch(domain:example.com).
TOOL = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}(\([^()\x00-\x1f\x7f]{1,300}\))?$")
MAX_TOOLS = 100
MAX_MCP_CONFIG_BYTES = 64 * 1024
_MCP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def model(config: dict[str, Any]) -> str | None:
    value = config.get("model")
    if value is None:
        return None
    if not isinstance(value, str) or not MODEL.match(value):
        raise InvalidAgentConfig(
            f"config.model must be a model name (letters, digits and . _ : / @ -, at most 100 "
            f"characters, not starting with '-'), got {_show(value)}")
    return value


def permission_mode(config: dict[str, Any], settings: Settings,
                    supported: tuple[str, ...]) -> str | None:
    value = config.get("permission_mode")
    if value is None:
        return None
    if not isinstance(value, str) or value not in supported:
        raise InvalidAgentConfig(
            f"config.permission_mode must be one of {', '.join(supported)}, got {_show(value)}")
    if value not in settings.allowed_permission_modes:
        raise InvalidAgentConfig(
            f"config.permission_mode {value!r} is not allowed here "
            f"(RUNNER_ALLOWED_PERMISSION_MODES={','.join(settings.allowed_permission_modes)})")
    return value


def tools(config: dict[str, Any], key: str) -> list[str]:
    value = config.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        raise InvalidAgentConfig(
            f"config.{key} must be a list of tool names like [\"Edit\", \"Bash(git diff:*)\"], "
            f"got the string {_show(value)}")
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise InvalidAgentConfig(f"config.{key} must be a list of at most {MAX_TOOLS} tool names")
    for item in value:
        if not isinstance(item, str) or not TOOL.match(item):
            raise InvalidAgentConfig(
                f"config.{key} has an invalid tool {_show(item)}: expected a name like Edit, "
                f"mcp__server__tool or Bash(git diff:*) (no leading '-', no control characters)")
    return list(value)


def choice(config: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise InvalidAgentConfig(f"config.{key} must be one of {', '.join(allowed)}, got {_show(value)}")
    return value


def max_turns(config: dict[str, Any]) -> int | None:
    value = config.get("max_turns")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 500:
        raise InvalidAgentConfig(f"config.max_turns must be a whole number from 1 to 500, got {_show(value)}")
    return value


def unsupported(config: dict[str, Any], agent: str, keys: tuple[str, ...]) -> None:
    """Refuse keys this agent's CLI has no way to honour: ignoring them would not be
    running the job as it asked (a disallowed tool silently allowed, say)."""
    for key in keys:
        if config.get(key) not in (None, [], {}):
            raise InvalidAgentConfig(f"config.{key} is not supported for agent {agent!r}")


def mcp_config(config: dict[str, Any], settings: Settings) -> dict[str, Any] | Path | None:
    """An object (written to the job dir by the adapter), or the path of an operator file."""
    value = config.get("mcp_config")
    if value is None:
        return None
    if isinstance(value, dict):
        servers = value.get("mcpServers")
        if not isinstance(servers, dict):
            raise InvalidAgentConfig('config.mcp_config must be an object with "mcpServers": {name: server}')
        for name, server in servers.items():
            if not _MCP_NAME.match(name) or not isinstance(server, dict):
                raise InvalidAgentConfig(f"config.mcp_config.mcpServers has an invalid entry {_show(name)}")
        if len(json.dumps(value)) > MAX_MCP_CONFIG_BYTES:
            raise InvalidAgentConfig(f"config.mcp_config is larger than {MAX_MCP_CONFIG_BYTES} bytes")
        return value
    if isinstance(value, str):
        root = settings.mcp_config_dir
        if root is None:
            raise InvalidAgentConfig(
                "config.mcp_config names a file, but the operator has not set RUNNER_MCP_CONFIG_DIR")
        if not _MCP_NAME.match(value):
            raise InvalidAgentConfig(
                f"config.mcp_config must be a file name inside RUNNER_MCP_CONFIG_DIR, got {_show(value)}")
        base = root.expanduser().resolve()
        path = (base / value).resolve()
        if path.parent != base or not path.is_file():
            raise InvalidAgentConfig(f"config.mcp_config {value!r} is not a file in RUNNER_MCP_CONFIG_DIR")
        return path
    raise InvalidAgentConfig(f"config.mcp_config must be an object or a file name, got {type(value).__name__}")


def write_private_json(path: Path, body: Any) -> Path:
    """Write ``body`` to a new file readable by the owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2)
    os.chmod(path, 0o600)
    return path


def rules_text(settings: Settings) -> str | None:
    """The agent's rules (CLAUDE.md), or None when the operator configured none."""
    path = settings.agent_rules_file
    if path is None:
        return None
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise IterationError(f"the agent rules file {path} cannot be read: {exc}") from exc
    return text if text.strip() else None
