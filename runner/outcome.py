"""How a run ended, in the runner's terms, and what the iteration does about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


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
