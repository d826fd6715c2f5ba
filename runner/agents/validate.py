"""What the operator decides about a job's config, checked when a worker claims it.

The config's shape is checked once, by runner/jobconfig.py, before anything else; here
only what depends on this worker's settings: the permission mode allowlist, and an MCP
config named as a file of the operator's. A refusal raises ``InvalidAgentConfig`` with a
sentence naming the key and the setting, and the job ends ``failed`` with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runner.errors import InvalidAgentConfig, IterationError
from runner.jobconfig import JobConfig
from runner.settings import Settings


def allowed(config: JobConfig, settings: Settings) -> None:
    mode = config.permission_mode
    if mode is not None and mode not in settings.allowed_permission_modes:
        raise InvalidAgentConfig(
            f"config.permission_mode {mode!r} is not allowed here "
            f"(RUNNER_ALLOWED_PERMISSION_MODES={','.join(settings.allowed_permission_modes)})")
    if isinstance(config.mcp_config, str):
        mcp_file(config.mcp_config, settings)


def mcp_file(name: str, settings: Settings) -> Path:
    """The path of an operator's MCP config file named by the job."""
    root = settings.mcp_config_dir
    if root is None:
        raise InvalidAgentConfig(
            "config.mcp_config names a file, but the operator has not set RUNNER_MCP_CONFIG_DIR")
    base = root.expanduser().resolve()
    path = (base / name).resolve()
    if path.parent != base or not path.is_file():
        raise InvalidAgentConfig(f"config.mcp_config {name!r} is not a file in RUNNER_MCP_CONFIG_DIR")
    return path


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
