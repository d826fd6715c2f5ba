"""runner/job.py in-process, against the real database: what ``JobRun._record`` writes for a
verdict (through outcome.ENDINGS), a runner fault handed back with its attempt, and a lost
claim after which nothing is written. The whole iteration (workspace, agent) is tested by
test_one_job.py with real processes; here a claimed row and the decision are enough."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from runner import job as job_module
from runner.contract import Exit
from runner.job import JobRun
from runner.logs import Sink
from runner.outcome import Outcome, Verdict
from runner.secrets import Redactor
from runner.settings import load_settings


@pytest.fixture
def settings(db_url, tmp_path):
    return load_settings(database_url=db_url, job_root=tmp_path / "jobs", log_dir=tmp_path / "logs",
                         state_dir=tmp_path / "state", retry_backoff_seconds=30,
                         retry_backoff_max_seconds=60)


def _claimed_run(queue, settings, **job):
    enqueued = queue.enqueue(prompt="p", **job)
    claim = queue.claim(["default"], 60)
    assert claim is not None and claim.id == enqueued["id"]
    return JobRun(settings, queue, claim, Sink(Redactor([])), settings.log_dir / "run.log",
                  threading.Event())


def _row(queue, run):
    return queue.get(run.claim.id)


def _events(queue, run):
    return [e["event"] for e in queue.events(run.claim.id)]


def test_a_failure_on_the_last_attempt_ends_failed_with_the_reason_and_no_attempts_left(queue, settings):
    run = _claimed_run(queue, settings, max_attempts=1)
    code = run._record(Outcome(Verdict.RETRY, reason="the tests failed"))
    row = _row(queue, run)
    assert code == Exit.OK  # the job reached a recorded state: the worker goes on at once
    assert row["status"] == "failed"
    assert "the tests failed" in row["error"] and "no attempts left" in row["error"]
    assert row["claim_token"] is None


def test_a_failure_with_attempts_left_is_queued_again_later_and_the_attempt_counts(queue, settings):
    run = _claimed_run(queue, settings, max_attempts=3)
    before = datetime.now(timezone.utc)
    run._record(Outcome(Verdict.RETRY, reason="the tests failed"))
    row = _row(queue, run)
    assert row["status"] == "queued"
    assert row["attempts"] == 1  # spent: the job's own failure
    assert row["run_after"] > before  # a backoff, so other jobs go first
    assert "retry_scheduled" in _events(queue, run)
    assert run.handed_back


def test_success_is_recorded_with_its_result(queue, settings):
    run = _claimed_run(queue, settings)
    code = run._record(Outcome(Verdict.SUCCEEDED, result={"summary": "done"}))
    row = _row(queue, run)
    assert (code, row["status"], row["result"]["summary"]) == (Exit.OK, "succeeded", "done")


def test_a_shutdown_hands_the_job_back_with_its_attempt(queue, settings):
    run = _claimed_run(queue, settings)
    code = run._record(Outcome(Verdict.SHUTDOWN, reason="the worker is stopping"))
    row = _row(queue, run)
    assert code == Exit.STOPPED
    assert (row["status"], row["attempts"]) == ("queued", 0)


def test_a_runner_fault_is_refunded_until_the_limit_then_the_job_ends_failed(queue, settings):
    job = queue.enqueue(prompt="p", max_attempts=5)
    statuses = []
    for _ in range(job_module.RUNNER_FAULT_LIMIT):
        queue.conn.execute("UPDATE jobs SET run_after = now() WHERE id = %s", (job["id"],))
        claim = queue.claim(["default"], 60)
        assert claim is not None
        run = JobRun(settings, queue, claim, Sink(Redactor([])), settings.log_dir / "run.log",
                     threading.Event())
        run._hand_back_safely("the runner failed while running the job: boom")
        row = queue.get(job["id"])
        statuses.append((row["status"], row["attempts"]))
    # Each hand-back gave the attempt back; the last one ends the job instead of looping.
    assert statuses[:-1] == [("queued", 0)] * (job_module.RUNNER_FAULT_LIMIT - 1)
    assert statuses[-1][0] == "failed"
    assert "the runner failed on this job" in queue.get(job["id"])["error"]


def test_after_a_lost_claim_nothing_is_written(queue, settings):
    run = _claimed_run(queue, settings)
    # Another worker holds the job now (its own token).
    queue.conn.execute("UPDATE jobs SET claim_token = gen_random_uuid() WHERE id = %s", (run.claim.id,))
    before = _row(queue, run)
    run._record(Outcome(Verdict.SUCCEEDED, result={"summary": "mine"}))
    after = _row(queue, run)
    assert run.claim_lost
    assert {k: after[k] for k in ("status", "result", "error", "claim_token")} == \
        {k: before[k] for k in ("status", "result", "error", "claim_token")}
