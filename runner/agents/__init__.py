"""Agent adapters, chosen by ``config.agent`` and checked against RUNNER_ALLOWED_AGENTS."""

from __future__ import annotations

from typing import Any

from runner import jobconfig
from runner.agents import validate
from runner.agents.base import Agent
from runner.agents.claude import ClaudeAgent
from runner.agents.codex import CodexAgent
from runner.agents.gemini import GeminiAgent
from runner.agents.simple import CommandAgent, StubAgent
from runner.errors import InvalidAgentConfig
from runner.jobconfig import JobConfig
from runner.settings import Settings

ADAPTERS: dict[str, type[Agent]] = {
    "claude": ClaudeAgent, "codex": CodexAgent, "gemini": GeminiAgent,
    "stub": StubAgent, "command": CommandAgent,
}


def select_agent(config: JobConfig | dict[str, Any], settings: Settings) -> Agent:
    """The job's adapter, once the worker's allowlists accept its config (parsed first when
    given as the raw JSON object)."""
    config = jobconfig.parse(config, settings.default_agent)
    name = config.agent_name(settings.default_agent)
    if name not in settings.allowed_agents:
        raise InvalidAgentConfig(
            f"agent {name!r} is not allowed here (RUNNER_ALLOWED_AGENTS={','.join(settings.allowed_agents)})"
        )
    if name == "command" and not settings.agent_command:
        raise InvalidAgentConfig("agent 'command' needs RUNNER_AGENT_COMMAND, which is not set")
    validate.allowed(config, settings)
    return ADAPTERS[name]()
