"""How a run ended, in the runner's terms, and what the iteration does about it.

Two tables hold the decisions: STOPS (why the runner stopped an agent → the verdict and
its sentence) and ENDINGS (verdict → what is written, whether the attempt is refunded,
the iteration's exit code, the event). ``job.JobRun._record`` only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any

from runner.contract import Exit


class Verdict(str, Enum):
    SUCCEEDED = "succeeded"      # recorded as succeeded
    BLOCKED = "blocked"          # the agent asked a person a question (BLOCKED.md)
    FAILED = "failed"            # will not get better by trying again
    RETRY = "retry"              # requeued with backoff while attempts remain, else failed
    CANCELLED = "cancelled"      # an operator asked for it
    TOKEN_EXPIRED = "token_expired"  # credentials rejected: rollback, attempt refunded, exit 3
    USAGE_LIMIT = "usage_limit"  # usage limit: rollback until the reset, refunded, exit 4
    LEASE_LOST = "lease_lost"    # someone else owns the job now: write nothing
    SHUTDOWN = "shutdown"        # SIGTERM/SIGINT: rollback, refunded, exit 143
    OVERLOADED = "overloaded"    # the model API answered 429/529/5xx: rollback, refunded,
    #                              counted by the guard that pauses the fleet (runner/guard.py)


@dataclass
class Outcome:
    verdict: Verdict
    reason: str | None = None              # a sentence a person understands
    result: dict[str, Any] = field(default_factory=dict)
    reset_at: datetime | None = None       # for USAGE_LIMIT

    @property
    def error(self) -> str | None:
        return None if self.verdict is Verdict.SUCCEEDED else self.reason


class EarlyStop(Exception):
    """Raised by a stream parser when a line already tells how the run ends (a rejected
    credential on the first retry, a usage limit): the agent is stopped at once."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class StopReason(StrEnum):
    """Why the runner stopped an agent before it ended by itself."""

    SHUTDOWN = "shutdown"        # SIGTERM/SIGINT to the iteration
    LEASE_LOST = "lease_lost"    # the claim belongs to someone else now
    CANCELLED = "cancelled"      # cancel_requested on the row
    TIMEOUT = "timeout"          # config.timeout_s ran out
    EARLY = "early"              # the stream already told how it ends (EarlyStop)


# Why it stopped → (verdict, the sentence; {timeout} and {during} filled in).
STOPS: dict[StopReason, tuple[Verdict, str]] = {
    StopReason.SHUTDOWN: (Verdict.SHUTDOWN, "the runner was stopped (SIGTERM/SIGINT){during}"),
    StopReason.LEASE_LOST: (Verdict.LEASE_LOST, "the claim was lost{during}"),
    StopReason.CANCELLED: (Verdict.CANCELLED, "cancelled by an operator{during}"),
    StopReason.TIMEOUT: (Verdict.RETRY, "timed out after {timeout} s{during}"),
}


def stopped(reason: StopReason, *, timeout: int | None = None, during: str = "") -> Outcome:
    """The outcome of a run the runner stopped (``during``: e.g. " during verify")."""
    verdict, sentence = STOPS[reason]
    return Outcome(verdict, reason=sentence.format(timeout=timeout, during=during))


class Action(StrEnum):
    FINISH = "finish"        # write the final status (the verdict's own name)
    RETRY = "retry"          # requeue with backoff while attempts remain, else failed
    HAND_BACK = "hand_back"  # requeue now (or at the usage reset), no verdict recorded
    NOTHING = "nothing"      # the claim is someone else's: write nothing at all


@dataclass(frozen=True)
class Ending:
    action: Action
    refund: bool     # the attempt is given back (the job was not at fault)
    exit: Exit       # the iteration's exit code, for the supervisor
    event: str | None  # the job_events row it writes


ENDINGS: dict[Verdict, Ending] = {
    Verdict.SUCCEEDED: Ending(Action.FINISH, False, Exit.OK, "succeeded"),
    Verdict.BLOCKED: Ending(Action.FINISH, False, Exit.OK, "blocked"),
    Verdict.FAILED: Ending(Action.FINISH, False, Exit.OK, "failed"),
    Verdict.CANCELLED: Ending(Action.FINISH, False, Exit.OK, "cancelled"),
    Verdict.RETRY: Ending(Action.RETRY, False, Exit.OK, "retry_scheduled"),
    Verdict.LEASE_LOST: Ending(Action.NOTHING, False, Exit.OK, None),
    Verdict.TOKEN_EXPIRED: Ending(Action.HAND_BACK, True, Exit.TOKEN_EXPIRED, "rolled_back"),
    Verdict.USAGE_LIMIT: Ending(Action.HAND_BACK, True, Exit.USAGE_LIMIT, "rolled_back"),
    Verdict.SHUTDOWN: Ending(Action.HAND_BACK, True, Exit.STOPPED, "rolled_back"),
    Verdict.OVERLOADED: Ending(Action.HAND_BACK, True, Exit.OK, "rolled_back"),
}
