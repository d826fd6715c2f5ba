"""The queue protects itself: repeated overloads of the model API pause the fleet.

A run that ends with the model API overloaded (HTTP 429, 529 or 5xx after the CLI's own
retries: ``Verdict.OVERLOADED``) is not the job's fault: it goes back to the queue with
its attempt refunded (``outcome.ENDINGS``), and it counts one strike against its (queue,
agent) in ``agent_pauses``. ``RUNNER_OVERLOAD_THRESHOLD`` strikes within
``RUNNER_OVERLOAD_WINDOW_SECONDS`` pause that agent on that queue for every worker — the
claim leaves its jobs out — for ``RUNNER_OVERLOAD_PAUSE_SECONDS``. The job that hit it
waits RUNNER_OVERLOAD_PAUSE_SECONDS behind the others (``hand_back_at``), so the strikes
that trip a pause come from several jobs.

When the pause is over, jobs are claimed again and the first to end decides, like a
circuit breaker's half-open state: a run that got its answers (succeeded or blocked)
lifts the guard (the row is deleted); another overload pauses again at once, for twice
as long each time (``retry.backoff``) up to ``RUNNER_OVERLOAD_PAUSE_MAX_SECONDS``.
``runner resume QUEUE`` lifts it by hand. docs/operations.md has the settings.

One job counts once per window (a request the API can never serve is that job's fault,
and must not pause everyone else's); and a job handed back RUNNER_OVERLOAD_REFUND_LIMIT
times for overloads has its later attempts counted (``refunded``), so it ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import structlog

from runner import retry
from runner.outcome import Outcome, Verdict
from runner.queue import Queue
from runner.settings import Settings

log = structlog.get_logger("runner.guard")

# Answers of the model API that say "not now", not "this job is wrong".
OVERLOAD_STATUSES = frozenset({429, 529}) | frozenset(range(500, 600))

# Runs whose agent got its answers from the model API: they lift the guard.
ANSWERED = (Verdict.SUCCEEDED, Verdict.BLOCKED)


def overloaded(status: Any) -> bool:
    """True for an HTTP status of the model API that means it is overloaded or failing."""
    return isinstance(status, int) and not isinstance(status, bool) and status in OVERLOAD_STATUSES


def after_run(queue: Queue, settings: Settings, job: dict[str, Any], agent: str | None,
              outcome: Outcome) -> datetime | None:
    """Count what one run says about the model API; the end of the pause it tripped or
    ran into, if any. A fault here never costs the job's recording: it is logged, and
    None returned."""
    if agent is None or outcome.verdict is Verdict.LEASE_LOST:
        return None
    try:
        return _count(queue, settings, job["queue"], agent, job["id"], outcome)
    except Exception as exc:
        log.error("overload_guard_failed", error=str(exc))
        return None


def hand_back_at(outcome: Outcome, settings: Settings) -> datetime | None:
    """When an overloaded job may be claimed again: after RUNNER_OVERLOAD_PAUSE_SECONDS, so
    the next claim tries another job — one job the API cannot serve then does not look like
    the API down, and a lone worker's strikes come from several jobs."""
    if outcome.verdict is not Verdict.OVERLOADED:
        return None
    return datetime.now(timezone.utc) + timedelta(seconds=settings.overload_pause_seconds)


def refunded(queue: Queue, settings: Settings, job: dict[str, Any], outcome: Outcome) -> Outcome:
    """The outcome as recorded: an overload is handed back refunded, until the job has been
    handed back RUNNER_OVERLOAD_REFUND_LIMIT times for it — then it is a retry that costs an
    attempt, so a job the model API can never serve ends ``failed`` instead of looping."""
    if outcome.verdict is not Verdict.OVERLOADED:
        return outcome
    before = queue.overload_hand_backs(job["id"])
    if before < settings.overload_refund_limit:
        return outcome
    return Outcome(Verdict.RETRY, result=outcome.result, reason=(
        f"{outcome.reason or 'the model API is overloaded'} (this job was handed back "
        f"{before} times for it, attempts refunded: RUNNER_OVERLOAD_REFUND_LIMIT; now its "
        f"attempts count)"))


def _count(queue: Queue, settings: Settings, name: str, agent: str, job_id: Any,
           outcome: Outcome) -> datetime | None:
    if outcome.verdict in ANSWERED:
        if queue.guard_clear(name, agent):
            log.info("overload_pause_lifted", queue=name, agent=agent)
        return None
    if outcome.verdict is not Verdict.OVERLOADED:
        return None
    row = queue.guard_strike(name, agent, job_id, outcome.reason or "the model API is overloaded",
                             settings.overload_window_seconds)
    if row["paused"]:  # another worker's strike paused it while this run went on
        return row["until"]
    # After a pause, with no success since, one more overload is enough.
    if row["strikes"] < settings.overload_threshold and row["pauses"] == 0:
        log.info("overload_counted", queue=name, agent=agent, strikes=row["strikes"],
                 threshold=settings.overload_threshold)
        return None
    seconds = retry.backoff(settings.overload_pause_seconds, settings.overload_pause_max_seconds,
                            row["pauses"] + 1)
    tripped = queue.guard_trip(name, agent, seconds)
    if tripped is None:  # another worker tripped it first: its pause stands
        return None
    log.warning("overload_pause", queue=name, agent=agent, seconds=seconds,
                until=tripped["until"].isoformat(), pauses_in_a_row=tripped["pauses"],
                reason=outcome.reason)
    return tripped["until"]
