"""Hand back what a previous, crashed iteration of this worker left claimed.

Iterations of one worker run one after another, so a job still claimed under this
worker id by a process that no longer exists was abandoned mid-run (SIGKILL, OOM, power
loss). Waiting for its lease to expire would idle the job for up to a lease; we know
better. The attempt stays counted: the job itself may be what killed the worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from runner import state
from runner.agent_user import AgentUser
from runner.procgroup import kill_attempt
from runner.queue import Claim, Queue

log = structlog.get_logger("runner.reconcile")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_orphaned_agent(state_dir: Path, worker_id: str, agent: AgentUser | None = None) -> int | None:
    """Kill what a dead iteration of this worker left running of its agent's attempt,
    before the job is handed back and claimed again: two agents must never work on one
    job. Every process of the attempt goes, in whatever session it is (Claude Code runs
    each tool command in one of its own): found by the agent's uid when it has one, else
    by the ``RUNNER_JOB_ID`` marker. Returns the old agent's group id when any was killed."""
    left = state.read_agent(state_dir, worker_id)
    if left is None:
        return None
    job_id, pgid, owner = left
    if owner != os.getpid() and _alive(owner):
        return None  # its iteration still runs: not an orphan, and not ours to touch
    killed = None
    if kill_attempt(job_id, agent):
        log.warning("orphaned_agent_killed", job_id=job_id, pgid=pgid, dead_iteration=owner)
        killed = pgid
    state.clear_agent(state_dir, worker_id)
    return killed


def reconcile(queue: Queue) -> list[str]:
    handed_back = []
    for row in queue.held_by_me():
        if row["claimed_pid"] == os.getpid() or _alive(row["claimed_pid"]):
            continue  # pid reuse or a live sibling: the lease decides instead
        claim = Claim(row)
        reason = f"a previous iteration of this worker (pid {row['claimed_pid']}) died holding it"
        if row["attempts"] >= row["max_attempts"]:
            done = queue.finish(claim, "failed", error=f"{reason}; no attempts left")
        else:
            done = queue.requeue(claim, event="reconciled", reason=reason, refund_attempt=False)
        if done:
            handed_back.append(str(row["id"]))
            log.warning("reconciled_abandoned_job", job_id=str(row["id"]), reason=reason)
    return handed_back
