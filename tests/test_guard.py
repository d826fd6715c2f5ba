"""runner/guard.py against the real database: strikes in a window, the pause every claim
honours (for one agent on one queue), the doubling backoff, and what lifts it."""

from __future__ import annotations

import pytest

from runner import guard
from runner.outcome import Outcome, Verdict
from runner.settings import load_settings

OVERLOADED = Outcome(Verdict.OVERLOADED, reason="the Claude API is overloaded (HTTP 529): busy")


@pytest.fixture
def settings(db_url):
    return load_settings(database_url=db_url, overload_threshold=2, overload_window_seconds=600,
                         overload_pause_seconds=60, overload_pause_max_seconds=100)


def _strike(queue, settings, job, agent="claude", outcome=OVERLOADED):
    return guard.after_run(queue, settings, job, agent, outcome)


def test_the_threshold_pauses_only_that_agent_on_that_queue(queue, settings):
    claude_job = queue.enqueue(prompt="a", config={"agent": "claude"})
    codex_job = queue.enqueue(prompt="b", config={"agent": "codex"})
    other_queue = queue.enqueue(prompt="c", queue="other", config={"agent": "claude"})
    assert _strike(queue, settings, claude_job) is None  # one strike: counted, no pause
    assert queue.pauses() == []
    until = _strike(queue, settings, queue.enqueue(prompt="a2", config={"agent": "claude"}))
    assert until is not None
    assert [(p["queue"], p["agent"]) for p in queue.pauses()] == [("default", "claude")]
    # A job of another agent on the queue, and the agent on another queue, are still claimed.
    assert queue.claim(["default"], 60).id == codex_job["id"]
    assert queue.claim(["default"], 60) is None
    assert queue.claim(["other"], 60).id == other_queue["id"]


def test_a_job_without_an_agent_is_the_workers_default_agents(queue, settings):
    job, second = queue.enqueue(prompt="a"), queue.enqueue(prompt="b")
    _strike(queue, settings, job)
    _strike(queue, settings, second)
    assert queue.claim(["default"], 60, default_agent="claude") is None
    assert queue.claim(["default"], 60, default_agent="codex") is not None


def test_strikes_outside_the_window_start_a_new_count(queue, settings):
    job = queue.enqueue(prompt="a")
    _strike(queue, settings, job)
    queue.conn.execute("UPDATE agent_pauses SET window_started_at = now() - interval '601 seconds'")
    assert _strike(queue, settings, job) is None and queue.pauses() == []
    assert queue.guard_states()[0]["strikes"] == 1


def test_after_a_pause_one_overload_pauses_again_for_twice_as_long_up_to_the_max(queue, settings):
    job = queue.enqueue(prompt="a")
    _strike(queue, settings, job)
    _strike(queue, settings, queue.enqueue(prompt="b"))
    lengths = []
    for _ in range(3):
        row = queue.guard_states()[0]
        lengths.append((row["until"] - row["updated_at"]).total_seconds())
        queue.conn.execute("UPDATE agent_pauses SET until = now()")  # its time ran out
        assert _strike(queue, settings, job) is not None  # the first overload after it
    assert lengths == [60, 100, 100]  # 60, 120 capped at 100, …
    # A strike during a pause (another worker's run that was already going) changes nothing.
    before = queue.guard_states()[0]
    _strike(queue, settings, job)
    assert queue.guard_states()[0]["until"] == before["until"]


@pytest.mark.parametrize("verdict", [Verdict.SUCCEEDED, Verdict.BLOCKED])
def test_a_run_that_got_its_answers_lifts_the_guard(queue, settings, verdict):
    job = queue.enqueue(prompt="a")
    _strike(queue, settings, job)
    _strike(queue, settings, queue.enqueue(prompt="b"))
    queue.conn.execute("UPDATE agent_pauses SET until = now()")
    _strike(queue, settings, job, outcome=Outcome(verdict))
    assert queue.guard_states() == []


def test_other_endings_count_nothing(queue, settings):
    job = queue.enqueue(prompt="a")
    for verdict in (Verdict.FAILED, Verdict.RETRY, Verdict.LEASE_LOST, Verdict.SHUTDOWN):
        _strike(queue, settings, job, outcome=Outcome(verdict, reason="x"))
    assert queue.guard_states() == []
    assert _strike(queue, settings, job, agent=None) is None and queue.guard_states() == []


def test_runner_resume_lifts_the_guards_pause(queue, settings):
    job = queue.enqueue(prompt="a")
    _strike(queue, settings, job)
    _strike(queue, settings, queue.enqueue(prompt="b"))
    assert queue.resume("default")
    assert queue.pauses() == [] and queue.claim(["default"], 60) is not None


def test_a_database_fault_in_the_guard_never_costs_the_recording(queue, settings):
    job = dict(queue.enqueue(prompt="a"))
    job["queue"] = None  # the strike's INSERT fails: NOT NULL
    assert _strike(queue, settings, job) is None


def test_one_job_the_api_always_fails_pauses_nobody(queue, settings):
    # A request the model API can never serve (the same job again and again) is that
    # job's problem: other jobs of the agent keep being claimed.
    poisoned = queue.enqueue(prompt="a")
    for _ in range(5):
        assert _strike(queue, settings, poisoned) is None
    assert queue.pauses() == [] and queue.guard_states()[0]["strikes"] == 1
    assert _strike(queue, settings, queue.enqueue(prompt="b")) is not None  # a second job: fleet-wide


def test_a_job_handed_back_too_often_for_overloads_has_its_attempts_counted(queue, db_url):
    s = load_settings(database_url=db_url, overload_refund_limit=2)
    job = queue.enqueue(prompt="a", max_attempts=3)
    for n in range(3):
        claim = queue.claim(["default"], 60)
        outcome = guard.refunded(queue, s, queue.get(job["id"]), OVERLOADED)
        if n < 2:  # refunded, and counted for the limit
            assert outcome is OVERLOADED
            assert queue.requeue(claim, event="rolled_back", reason=outcome.reason,
                                 refund_attempt=True, overloaded=True)
            assert queue.get(job["id"])["attempts"] == 0
    assert outcome.verdict is Verdict.RETRY
    assert "handed back 2 times for it" in outcome.reason and "RUNNER_OVERLOAD_REFUND_LIMIT" in outcome.reason
    assert outcome.reason.startswith("the Claude API is overloaded (HTTP 529)")
