"""Agent adapters, chosen by ``config.agent`` and checked against RUNNER_ALLOWED_AGENTS."""

from __future__ import annotations

from typing import Any

from runner.agents.base import Agent
from runner.agents.claude import ClaudeAgent
from runner.agents.codex import CodexAgent
from runner.agents.gemini import GeminiAgent
from runner.agents.simple import CommandAgent, StubAgent
from runner.errors import InvalidAgentConfig
from runner.settings import Settings

ADAPTERS: dict[str, type[Agent]] = {
    "claude": ClaudeAgent, "codex": CodexAgent, "gemini": GeminiAgent,
    "stub": StubAgent, "command": CommandAgent,
}


def select_agent(config: dict[str, Any], settings: Settings) -> Agent:
    name = config.get("agent", settings.default_agent)
    if not isinstance(name, str):
        raise InvalidAgentConfig(f"config.agent must be a string, got {type(name).__name__}")
    if name not in ADAPTERS:
        known = ", ".join(sorted(ADAPTERS))
        raise InvalidAgentConfig(f"unknown agent {name[:60]!r}; known agents: {known}")
    if name not in settings.allowed_agents:
        raise InvalidAgentConfig(
            f"agent {name!r} is not allowed here (RUNNER_ALLOWED_AGENTS={','.join(settings.allowed_agents)})"
        )
    agent = ADAPTERS[name]()
    agent.validate(config, settings)
    return agent
