"""What happens after the agent succeeded: the verify gate, then the push.

Either one failing turns the outcome into ``failed`` with its reason; a stop request
(shutdown, lost lease, cancel) during verify is honoured like one during the agent.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import structlog

from runner import push, verify
from runner.procgroup import kill_attempt
from runner.process import hand_tree
from runner.outcome import Outcome, StopReason, Verdict, stopped
from runner.settings import Settings
from runner.workspace import Workspace

log = structlog.get_logger("runner.gates")


def after_success(outcome: Outcome, ws: Workspace, settings: Settings, checks: verify.Plan,
                  do_push: bool, env: dict[str, str], write_line: Callable[[str], None],
                  should_stop: Callable[[], str | None]) -> Outcome:
    if checks.commands:
        report = _verify(checks, ws, settings, env, write_line, should_stop)
        outcome.result["verify"] = report.ran
        if report.stopped is not None:
            return _stopped(report.stopped)
        if not report.ok:
            log.info("verify_failed", reason=report.reason)
            return Outcome(Verdict.FAILED, reason=report.reason, result=outcome.result)
        log.info("verify_passed", commands=len(checks.commands))
    if do_push:
        try:
            outcome.result["pushed"] = push.push(ws, settings)
        except push.PushFailed as exc:
            log.info("push_failed", reason=str(exc))
            return Outcome(Verdict.FAILED, reason=str(exc), result=outcome.result)
    return outcome


def _verify(checks: verify.Plan, ws: Workspace, settings: Settings, env: dict[str, str],
            write_line: Callable[[str], None], should_stop: Callable[[], str | None]) -> verify.Report:
    """The verify commands, as the agent's own uid when it has one: the work tree is its
    again while they run, and nothing they started outlives them."""
    agent = settings.agent
    if not agent.isolated:
        return verify.run(checks, ws.path, env, write_line, should_stop)
    hand_tree(ws.path, agent.uid, agent.gid)
    try:
        return verify.run(checks, ws.path, env, write_line, should_stop, agent=agent)
    finally:
        kill_attempt(str(env.get("RUNNER_JOB_ID", "")), agent)
        hand_tree(ws.path, os.getuid(), os.getgid())


def _stopped(reason: str) -> Outcome:
    known = reason in set(StopReason)
    return stopped(StopReason(reason) if known else StopReason.SHUTDOWN, during=" during verify")
