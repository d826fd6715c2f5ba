"""The decision tables of runner/outcome.py: how a run ends, and what that writes."""

from __future__ import annotations

import pytest

from runner.contract import Exit
from runner.outcome import ENDINGS, STOPS, Action, StopReason, Verdict, stopped


def test_every_verdict_has_exactly_one_ending():
    assert set(ENDINGS) == set(Verdict)


@pytest.mark.parametrize("verdict, action, refund, code", [
    (Verdict.SUCCEEDED, Action.FINISH, False, Exit.OK),
    (Verdict.FAILED, Action.FINISH, False, Exit.OK),
    (Verdict.RETRY, Action.RETRY, False, Exit.OK),
    (Verdict.LEASE_LOST, Action.NOTHING, False, Exit.OK),
    (Verdict.TOKEN_EXPIRED, Action.HAND_BACK, True, Exit.TOKEN_EXPIRED),
    (Verdict.USAGE_LIMIT, Action.HAND_BACK, True, Exit.USAGE_LIMIT),
    (Verdict.SHUTDOWN, Action.HAND_BACK, True, Exit.STOPPED),
    (Verdict.OVERLOADED, Action.HAND_BACK, True, Exit.OK),
])
def test_what_each_ending_does(verdict, action, refund, code):
    ending = ENDINGS[verdict]
    assert (ending.action, ending.refund, ending.exit) == (action, refund, code)


def test_nothing_the_job_is_not_at_fault_for_costs_an_attempt():
    # Finished and retried runs used their attempt; every hand-back gives it back.
    for verdict, ending in ENDINGS.items():
        assert ending.refund == (ending.action is Action.HAND_BACK), verdict


def test_a_stop_becomes_a_verdict_with_a_sentence():
    assert set(STOPS) == set(StopReason) - {StopReason.EARLY}
    timed_out = stopped(StopReason.TIMEOUT, timeout=30)
    assert timed_out.verdict is Verdict.RETRY and timed_out.reason == "timed out after 30 s"
    verify = stopped(StopReason.CANCELLED, during=" during verify")
    assert verify.verdict is Verdict.CANCELLED
    assert verify.reason == "cancelled by an operator during verify"
    assert stopped(StopReason.LEASE_LOST).verdict is Verdict.LEASE_LOST
