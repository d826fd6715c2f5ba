"""The queue's statements on a real PostgreSQL: who gets which job, and who may write."""

import json
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from runner.errors import DatabaseWriteFailed
from runner.queue import Queue


def _events(queue: Queue, job_id) -> list[str]:
    return [e["event"] for e in queue.events(job_id)]


def test_claim_takes_highest_priority_then_oldest(queue):
    low = queue.enqueue(prompt="low", priority=0)
    high_old = queue.enqueue(prompt="high old", priority=5)
    high_new = queue.enqueue(prompt="high new", priority=5)
    order = [queue.claim(["default"], 60).id for _ in range(3)]
    assert order == [high_old["id"], high_new["id"], low["id"]]
    assert queue.claim(["default"], 60) is None


def test_claim_honours_run_after_and_queues(queue):
    later = queue.enqueue(prompt="later", run_after=datetime.now(timezone.utc) + timedelta(hours=1))
    other = queue.enqueue(prompt="other queue", queue="gpu")
    assert queue.claim(["default"], 60) is None
    claim = queue.claim(["gpu", "default"], 60)
    assert claim.id == other["id"]
    assert queue.get(later["id"])["status"] == "queued"


def test_the_claim_says_running_with_its_job_on_the_workers_row(queue):
    # `runner workers` shows what a worker runs from its claim on (no statement of its own).
    queue.worker_seen("starting", queues=["default"])
    job = queue.enqueue(prompt="x")
    queue.claim(["default"], 60)
    row = next(w for w in queue.workers() if w["id"] == "test-worker")
    assert row["state"] == "running" and row["current_job"] == job["id"]
    assert row["queues"] == ["default"]
    assert queue.claim(["default"], 60) is None  # an empty claim changes nothing
    row = next(w for w in queue.workers() if w["id"] == "test-worker")
    assert row["state"] == "running" and row["current_job"] == job["id"]


def test_claim_sets_owner_token_lease_and_counts_the_attempt(queue):
    job = queue.enqueue(prompt="x")
    claim = queue.claim(["default"], 60)
    row = queue.get(job["id"])
    assert row["status"] == "claimed" and row["claimed_by"] == "test-worker"
    assert row["claim_token"] == claim.token and row["attempts"] == 1
    assert row["lease_until"] > datetime.now(timezone.utc) + timedelta(seconds=50)
    assert _events(queue, job["id"]) == ["enqueued", "claimed"]


def test_a_stale_token_cannot_write(db_url, queue):
    queue.enqueue(prompt="x")
    first = queue.claim(["default"], 60)
    # The lease expires and another worker takes the job over.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 second'")
    other = Queue.open(db_url, "other-worker")
    assert other.requeue_expired() == [first.id]
    second = other.claim(["default"], 60)
    assert second.id == first.id and second.token != first.token

    assert queue.renew(first, 60) is None
    assert not queue.mark_running(first, "/tmp/x")
    assert not queue.finish(first, "succeeded", result={"late": True})
    assert not queue.requeue(first, event="rolled_back", reason="late", refund_attempt=True)
    row = queue.get(first.id)
    assert row["status"] == "claimed" and row["claimed_by"] == "other-worker"
    assert row["attempts"] == 2 and row["result"] is None
    assert other.finish(second, "succeeded", result={"ok": True})
    other.close()


def test_expired_lease_on_the_last_attempt_fails_the_job(db_url, queue):
    job = queue.enqueue(prompt="x", max_attempts=1)
    queue.claim(["default"], 60)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 second'")
    queue.requeue_expired()
    row = queue.get(job["id"])
    assert row["status"] == "failed"
    assert "stopped renewing its lease" in row["error"] and "no attempts left" in row["error"]


def test_rollback_can_refund_the_attempt(queue):
    job = queue.enqueue(prompt="x")
    claim = queue.claim(["default"], 60)
    reset = datetime.now(timezone.utc) + timedelta(minutes=30)
    assert queue.requeue(claim, event="rolled_back", reason="usage limit", refund_attempt=True,
                         run_after=reset)
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0 and row["claim_token"] is None
    assert abs((row["run_after"] - reset).total_seconds()) < 1
    assert _events(queue, job["id"])[-1] == "rolled_back"


def test_cancel_a_queued_job_ends_it_and_a_running_one_is_flagged(queue):
    queued = queue.enqueue(prompt="q")
    assert queue.request_cancel(queued["id"]) == "cancelled"
    assert queue.get(queued["id"])["status"] == "cancelled"
    running = queue.enqueue(prompt="r")
    claim = queue.claim(["default"], 60)
    assert queue.request_cancel(running["id"]) == "claimed"
    assert queue.renew(claim, 60)["cancel_requested"] is True
    assert queue.request_cancel(queued["id"]) is None  # already finished


def test_retry_sends_a_failed_job_round_again(queue):
    job = queue.enqueue(prompt="x")
    claim = queue.claim(["default"], 60)
    queue.finish(claim, "failed", error="boom")
    assert queue.retry(job["id"])
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0 and row["error"] is None
    assert not queue.retry(job["id"])  # a queued job is not retried


def test_concurrent_claimers_never_share_a_job(db_url, queue):
    for i in range(300):
        queue.enqueue(prompt=f"job {i}")
    taken: list = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        q = Queue.open(db_url, f"w{n}")
        while (claim := q.claim(["default"], 60)) is not None:
            with lock:
                taken.append(claim.id)
        q.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 300 and len(set(taken)) == 300


def test_prune_removes_only_old_finished_jobs(queue):
    old = queue.enqueue(prompt="old")
    recent = queue.enqueue(prompt="recent")
    waiting = queue.enqueue(prompt="waiting")
    for _ in range(2):
        queue.finish(queue.claim(["default"], 60), "succeeded")
    queue.conn.execute("UPDATE jobs SET finished_at = now() - interval '40 days' WHERE id = %s",
                       (old["id"],))
    assert queue.prune_finished(days=30.0) == 1  # a float, as the setting gives it
    assert queue.get(old["id"]) is None and queue.events(old["id"]) == []
    assert queue.get(recent["id"])["status"] == "succeeded"
    assert queue.get(waiting["id"])["status"] == "queued"


def test_a_claim_is_visible_to_others_and_later_writes_stay_durable(queue, db_url):
    job = queue.enqueue(prompt="p")
    claim = queue.claim(["default"], 60)
    assert claim is not None and claim.id == job["id"]
    with psycopg.connect(db_url) as other:
        assert other.execute("SELECT status FROM jobs WHERE id = %s", [job["id"]]).fetchone()[0] == "claimed"
    # Only the claim's own commit skips the flush: the session setting is untouched.
    assert queue.conn.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"] == "on"
    assert queue.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_status_change_is_flushed_to_disk_before_it_returns_and_still_announced(queue, db_url):
    """mark_running, finish and requeue COMMIT without waiting for the disk (so their NOTIFY
    does not hold PostgreSQL's notify lock through a flush); flush_wal, the next transaction
    of the same round trip, makes them durable before the method returns."""
    sent, before, flushed_to = [], {}, {}
    execute = queue._execute

    def flushed_after(name, changed):
        flushed_to[name] = queue.flushed_to
        return changed

    send = queue._send

    def spy_send(name, statements, params):
        assert name in ("mark_running", "finish", "requeue"), name
        return spy(name, statements, params, _send=True)

    def spy(name, statement, params, *args, _send=False, **kwargs):
        sent.append(name)
        if name in ("mark_running", "finish", "requeue") and name not in before:
            before[name] = queue.conn.execute("SELECT pg_current_wal_insert_lsn() AS l").fetchone()["l"]
        if _send:
            return send(name, statement, params)
        return execute(name, statement, params, *args, **kwargs)

    queue._execute = spy
    queue._send = spy_send
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN runner_jobs")
        queue.enqueue(prompt="a")
        queue.enqueue(prompt="b")
        first = queue.claim(["default"], 60)
        assert flushed_after("mark_running", queue.mark_running(first, "/w"))
        assert flushed_after("finish", queue.finish(first, "succeeded", result={}))
        second = queue.claim(["default"], 60)
        assert flushed_after("requeue", queue.requeue(second, event="rolled_back", reason="r",
                                                      refund_attempt=True))
        flushed = listener.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]
        assert not queue.finish(first, "failed")  # not ours any more: nothing changed
        statuses = [json.loads(n.payload)["status"] for n in listener.notifies(timeout=1, stop_after=7)]
    # one round trip per status change: the change and its flush in one message
    assert sent == ["enqueue", "enqueue", "claim", "mark_running", "finish", "claim", "requeue", "finish"]
    for name in ("mark_running", "finish", "requeue"):
        # the flush came after the change began, and was on disk when the method returned
        assert int_lsn(before[name]) < int_lsn(flushed_to[name]) <= int_lsn(flushed), name
    assert statuses[-5:] == ["claimed", "running", "succeeded", "claimed", "queued"]
    # the change's own COMMIT skipped the flush; the session's setting is untouched
    assert queue.conn.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"] == "on"
    assert queue.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_failed_status_change_leaves_the_connection_usable_and_nothing_changed(queue):
    """The change, its COMMIT and the flush travel in one message: a change the database
    refuses rolls back alone, and the next statement runs as usual."""
    queue.enqueue(prompt="a")
    claim = queue.claim(["default"], 60)
    with pytest.raises(DatabaseWriteFailed):
        queue.finish(claim, "no such status")
    assert queue.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert queue.get(claim.id)["status"] == "claimed"
    assert queue.finish(claim, "succeeded", result={})
    assert queue.get(claim.id)["status"] == "succeeded"


@pytest.mark.parametrize("prepare_threshold", [5, None], ids=["prepared", "behind-a-pooler"])
def test_status_changes_warn_of_nothing_and_are_prepared_unless_a_pooler_forbids_it(
        db_url, prepare_threshold):
    """Every status change COMMITs its own explicit transaction: no "there is no transaction
    in progress" WARNING, to the client or in the server's log, at each one. Repeated, the
    change and its flush run as prepared statements — but never on a connection whose
    prepared statements are off (a transaction-mode pooler, runner/pooler.py)."""
    queue = Queue.open(db_url, "test-worker", prepare_threshold=prepare_threshold)
    notices = []
    queue.conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    try:
        for i in range(8):
            queue.enqueue(prompt=f"p{i}")
            claim = queue.claim(["default"], 60)
            assert queue.mark_running(claim, "/w")
            assert queue.finish(claim, "succeeded", result={})
            assert queue.get(claim.id)["status"] == "succeeded"
        assert notices == []
        prepared = [r["statement"] for r in
                    queue.conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()]
        flush_prepared = any("pg_logical_emit_message" in s for s in prepared)
        assert flush_prepared == (prepare_threshold is not None), prepared
    finally:
        queue.close()


@pytest.mark.parametrize("prepare_threshold", [5, None], ids=["prepared", "behind-a-pooler"])
def test_the_warm_up_leaves_the_claim_planned_so_a_woken_claim_plans_nothing(
        db_url, queue, prepare_threshold):
    """A waiting worker's warm-up runs the claim until PostgreSQL keeps a generic plan of
    it: the claim a NOTIFY wakes is executed, not parsed and planned (~1 ms of a claim on
    these machines, benchmarks/agent_start.py). Never prepared behind a transaction-mode
    pooler, where the next transaction may be another server connection's."""
    worker = Queue.open(db_url, "warm-worker", prepare_threshold=prepare_threshold)
    try:
        worker.warm_up("command")
        plans = worker.conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s", ["%%FOR UPDATE OF j SKIP LOCKED%%"]).fetchall()
        if prepare_threshold is None:
            assert plans == []
        else:
            assert len(plans) == 1 and plans[0]["generic_plans"] >= 1, plans
        job = queue.enqueue(prompt="after the warm-up")
        claim = worker.claim(["default"], 60)
        assert claim is not None and claim.id == job["id"]
        if prepare_threshold is not None:
            after = worker.conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE %s", ["%%FOR UPDATE OF j SKIP LOCKED%%"]).fetchone()
            # the real claim ran the kept plan: no plan of its own
            assert after["generic_plans"] == plans[0]["generic_plans"] + 1, (plans, after)
            assert after["custom_plans"] == plans[0]["custom_plans"]
    finally:
        worker.close()


def int_lsn(lsn: str) -> int:
    high, low = str(lsn).split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_a_status_change_inside_a_callers_transaction_is_the_callers_to_commit(queue):
    queue.enqueue(prompt="a")
    claim = queue.claim(["default"], 60)
    with queue.conn.transaction(force_rollback=True):
        assert queue.finish(claim, "succeeded", result={})
    assert queue.get(claim.id)["status"] == "claimed"


def test_a_warm_up_leaves_no_trace_and_is_heard_by_nobody(db_url, queue):
    """Queue.warm_up runs the claim path on a job of its own and rolls it all back."""
    listener = psycopg.connect(db_url, autocommit=True)
    listener.execute("LISTEN runner_jobs")
    real = queue.enqueue(prompt="a real one")
    list(listener.notifies(timeout=0.5))  # the real enqueue's notice
    worker = Queue.open(db_url, "warm-worker")
    worker.worker_seen("waiting", queues=["default"])
    before = worker.workers()
    counts = "SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM job_events) AS events"
    was = worker.conn.execute(counts).fetchone()
    worker.warm_up("command")
    assert worker.conn.execute(counts).fetchone() == was
    assert worker.workers() == before  # the claim's presence write was rolled back too
    assert list(listener.notifies(timeout=0.5)) == []
    # The connection is fine for the real claim, which finds the real job.
    claim = worker.claim(["default"], 60)
    assert claim is not None and claim.id == real["id"]
    # Inside a caller's transaction it does nothing (the COMMIT is the caller's).
    was = worker.conn.execute(counts).fetchone()
    with worker.conn.transaction():
        worker.warm_up("command")
        assert worker.conn.execute(counts).fetchone() == was
    worker.close()
    listener.close()


def test_running_is_sent_first_and_read_back_once_durable(queue, db_url):
    """JobRun sends mark_running and writes the job's last files while the server commits
    and flushes it; changed() returns once it is on disk, and says whether the claim held."""
    queue.enqueue(prompt="a")
    claim = queue.claim(["default"], 60)
    sent = queue.mark_running_sent(claim, "/w", agent="command")
    assert sent.changed() is True
    assert sent.changed() is True  # read once, remembered
    with psycopg.connect(db_url, autocommit=True) as other:
        flushed = other.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]
    assert int_lsn(queue.flushed_to) <= int_lsn(flushed)
    assert queue.get(claim.id)["status"] == "running"
    # A claim lost meanwhile (another worker took the job over): nothing changes.
    queue.enqueue(prompt="b")
    second = queue.claim(["default"], 60)
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("UPDATE jobs SET claim_token = gen_random_uuid() WHERE id = %s", [second.id])
    assert queue.mark_running_sent(second, "/w").changed() is False
    assert queue.get(second.id)["status"] == "claimed"
    assert queue.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
