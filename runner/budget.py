"""Budgets: what one job may spend, enforced by the runner from the agent's stream.

Two job config keys, each read in one small function: ``max_budget_usd`` (dollars) and
``max_tokens`` (every token the model read or wrote: input, output, cache writes and cache
reads, as the stream reports them). The operator's ``RUNNER_MAX_BUDGET_USD`` caps what a
job may ask: a job asking more is clamped to it (said in the log and in ``result.budget``),
and a job asking nothing gets it. Claude Code gets the dollar budget as its own
``--max-budget-usd`` as well; for every agent the runner adds up the stream and stops the
agent once a limit is reached — the job then ends ``failed`` with "budget of … reached
after …", its spend in ``result`` and its work kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from runner.agents.base import ReaderWrapper, RunOutput, StreamReader
from runner.jobconfig import JobConfig
from runner.outcome import EarlyStop, Outcome, Verdict
from runner.settings import Settings

log = structlog.get_logger("runner.budget")



@dataclass(frozen=True)
class Limits:
    max_tokens: int | None = None
    max_budget_usd: float | None = None
    asked_usd: float | None = None  # what the job asked, when the ceiling clamped it

    @property
    def any(self) -> bool:
        return self.max_tokens is not None or self.max_budget_usd is not None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_tokens": self.max_tokens, "max_budget_usd": self.max_budget_usd}
        if self.asked_usd is not None:
            out["asked_usd"] = self.asked_usd
            out["clamped_by"] = "RUNNER_MAX_BUDGET_USD"
        return out


def limits(config: JobConfig, settings: Settings) -> Limits:
    """The job's limits after the operator's ceiling (clamp, never refuse: the job still
    runs, within what the operator allows)."""
    asked, ceiling = config.max_budget_usd, settings.max_budget_usd
    usd, clamped = asked, None
    if ceiling is not None and (asked is None or asked > ceiling):
        usd, clamped = ceiling, asked if asked is not None and asked > ceiling else None
    return Limits(config.max_tokens, usd, clamped)


def log_limits(lim: Limits) -> None:
    if lim.asked_usd is not None:
        log.warning("budget_clamped", asked_usd=lim.asked_usd, max_budget_usd=lim.max_budget_usd,
                    reason="RUNNER_MAX_BUDGET_USD caps what a job may spend")
    if lim.any:
        log.info("budget", max_tokens=lim.max_tokens, max_budget_usd=lim.max_budget_usd)


@dataclass(frozen=True)
class Spend:
    tokens: int | None = None
    cost_usd: float | None = None


def spend_of(result: dict[str, Any]) -> Spend:
    """What a reader's result says was spent: tokens added up from ``usage`` (its
    ``total_tokens`` when the agent gives one), and ``cost_usd``."""
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    if isinstance(usage.get("total_tokens"), int):
        tokens: int | None = usage["total_tokens"]
    else:
        # Codex's cached_input_tokens and reasoning_output_tokens are parts of its input
        # and output counts, not more tokens.
        counted = [v for k, v in usage.items() if k.endswith("tokens") and isinstance(v, int)
                   and not isinstance(v, bool) and not k.startswith(("cached_", "reasoning_"))]
        tokens = sum(counted) if counted else None
    cost = result.get("cost_usd")
    return Spend(tokens, float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None)


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}".rstrip("0").rstrip(".")


def reached(lim: Limits, spent: Spend) -> str | None:
    """The sentence when a limit is reached, else None."""
    if lim.max_tokens is not None and spent.tokens is not None and spent.tokens >= lim.max_tokens:
        return f"budget of {lim.max_tokens:,} tokens reached after {spent.tokens:,} tokens"
    if lim.max_budget_usd is not None and spent.cost_usd is not None \
            and spent.cost_usd >= lim.max_budget_usd:
        return (f"budget of {_usd(lim.max_budget_usd)} reached after "
                f"{_usd(spent.cost_usd)}")
    return None


class BudgetedReader(ReaderWrapper):
    """Wraps an agent's reader: after every line, the spend so far against the limits.

    Reaching one stops the agent (EarlyStop) and ends the job ``failed``. Claude Code's own
    ``--max-budget-usd`` stop (result subtype ``error_max_budget_usd``) ends it the same way.
    """

    def __init__(self, inner: StreamReader, lim: Limits) -> None:
        super().__init__(inner)
        self.limits = lim

    def feed(self, stream: str, line: str) -> None:
        self.inner.feed(stream, line)
        # Once the final event is in, the run is over: its outcome decides (a run that
        # finished just past its budget keeps its result).
        if stream != "stdout" or not self.limits.any or self.inner.finished():
            return
        partial = self.inner.partial_result()
        sentence = reached(self.limits, spend_of(partial))
        if sentence is not None:
            raise EarlyStop(self._failed(f"{sentence}; the agent was stopped", partial))

    def outcome(self, run: RunOutput) -> Outcome:
        outcome = self.inner.outcome(run)
        if outcome.result.get("subtype") == "error_max_budget_usd":
            spent = spend_of(outcome.result)
            usd = self.limits.max_budget_usd
            sentence = (f"budget of {_usd(usd)} reached after {_usd(spent.cost_usd or 0)} "
                        f"(Claude Code stopped at its --max-budget-usd)") if usd is not None else \
                "Claude Code stopped at its --max-budget-usd"
            return self._failed(sentence, outcome.result)
        if self.limits.any:
            outcome.result.setdefault("budget", self.limits.describe())
        return outcome

    def _failed(self, sentence: str, result: dict[str, Any]) -> Outcome:
        return Outcome(Verdict.FAILED, reason=sentence,
                       result={**result, "budget": {**self.limits.describe(), "reached": sentence}})
