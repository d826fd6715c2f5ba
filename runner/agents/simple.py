"""The two agents without a vendor CLI: the built-in ``stub`` and the operator's ``command``."""

from __future__ import annotations

import shlex
import sys

from runner.agents import stub_agent
from runner.agents.base import Agent, AgentCommand, RunContext, base_env


class StubAgent(Agent):
    name = "stub"

    def command(self, ctx: RunContext) -> AgentCommand:
        env = base_env(ctx)
        # Run by path: the stub needs only the standard library, not the runner installed.
        return AgentCommand([sys.executable, stub_agent.__file__, ctx.prompt], env, ctx.workdir)


class CommandAgent(Agent):
    """Runs ``RUNNER_AGENT_COMMAND`` with the prompt in ``RUNNER_PROMPT`` and the payload
    path in ``RUNNER_PAYLOAD``; exit code 0 is success."""

    name = "command"

    def command(self, ctx: RunContext) -> AgentCommand:
        env = base_env(ctx)
        env["RUNNER_PROMPT"] = ctx.prompt
        argv = shlex.split(ctx.settings.agent_command or "")
        return AgentCommand(argv, env, ctx.workdir)
