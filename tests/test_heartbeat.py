"""runner/heartbeat.py: the worker row is touched between lease renewals."""

from __future__ import annotations

import time

from runner import heartbeat
from runner.heartbeat import Heartbeat
from runner.queue import Queue


def last_seen(queue: Queue, worker_id: str):
    return next(w["last_seen_at"] for w in queue.workers() if w["id"] == worker_id)


def test_a_running_worker_stays_present_between_renewals(db_url, queue, monkeypatch):
    monkeypatch.setattr(heartbeat, "PRESENCE_SECONDS", 0.3)
    worker = Queue.open(db_url, "busy-worker")
    worker.worker_seen("running")
    before = last_seen(queue, "busy-worker")
    worker.enqueue(prompt="p")
    claim = worker.claim(["default"], 60)
    with Heartbeat(db_url, "busy-worker", claim, lease_seconds=60, interval=30) as hb:
        time.sleep(1.0)  # no renewal yet (every 30 s), but presence every 0.3 s
        assert not hb.lost.is_set()
    assert last_seen(queue, "busy-worker") > before
    assert [w["gone"] for w in queue.workers()] == [False]
    worker.close()


def test_touch_worker_refreshes_only_last_seen(queue):
    queue.worker_seen("idle", queues=["a"])
    row = queue.workers()[0]
    time.sleep(0.05)
    queue.touch_worker()
    after = queue.workers()[0]
    assert after["last_seen_at"] > row["last_seen_at"]
    assert (after["state"], after["queues"], after["started_at"]) == ("idle", ["a"], row["started_at"])


def test_a_dropped_listen_connection_is_reopened_and_the_row_read_again(db_url, queue):
    """The heartbeat's connection is killed, then the job is cancelled while nobody listens:
    the reopened connection reads the row at once (renewal would come only after 30 s)."""
    import psycopg

    from tests.waiting import wait_for

    worker = Queue.open(db_url, "hb-drop")
    worker.enqueue(prompt="p")
    claim = worker.claim(["default"], 90)
    with Heartbeat(db_url, "hb-drop", claim, lease_seconds=90, interval=30) as hb, \
            psycopg.connect(db_url, autocommit=True) as admin:
        app = "runner:heartbeat:hb-drop"

        def backend():
            row = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                (app,)).fetchone()
            return row and row[0]

        pid = wait_for(backend, 10, "the heartbeat's connection")
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", (claim.id,))
        wait_for(hb.cancel_requested.is_set, 20, "the cancel seen after the reconnect")
        assert not hb.lost.is_set()
        assert hb.stop_reason() == "cancelled"
    worker.close()


def test_progress_ticks_are_throttled_and_urgent_ones_all_written(db_url, queue, monkeypatch):
    """Ticks (new text) are written at most every PROGRESS_SECONDS — here 60 — while every
    tool start/end or turn gets its row; the latest tick is written when the run ends."""
    from tests.waiting import wait_for

    monkeypatch.setattr(heartbeat, "PROGRESS_SECONDS", 60)
    worker = Queue.open(db_url, "hb-progress")
    job = worker.enqueue(prompt="p")
    claim = worker.claim(["default"], 90)
    worker.mark_running(claim, "/tmp/x")

    def kinds():
        return [e["detail"]["kind"] for e in queue.events(job["id"]) if e["event"] == "progress"]

    with Heartbeat(db_url, "hb-progress", claim, lease_seconds=90, interval=30) as hb:
        hb.report({"kind": "text", "n": 1}, False)
        wait_for(lambda: kinds() == ["text"], 10, "the first tick")
        for n in range(2, 10):
            hb.report({"kind": "text", "n": n}, False)
        hb.report({"kind": "tool_start", "n": 10}, True)
        hb.report({"kind": "tool_end", "n": 11}, True)
        wait_for(lambda: kinds() == ["text", "tool_start", "tool_end"], 10, "the urgent rows")
        hb.report({"kind": "text", "n": 12}, False)
    rows = [e["detail"] for e in queue.events(job["id"]) if e["event"] == "progress"]
    assert [r["n"] for r in rows] == [1, 10, 11, 12]
    assert queue.get(job["id"])["progress"]["n"] == 12 and rows[0]["attempt"] == 1
    worker.close()


def test_a_heartbeat_started_after_the_spawn_still_hears_an_earlier_cancel(db_url, queue):
    """The iteration starts the thread once its agent is spawned (start_on_enter=False): a
    cancel asked between the claim and that start is read when the thread starts."""
    from tests.waiting import wait_for

    worker = Queue.open(db_url, "hb-late")
    job = worker.enqueue(prompt="p")
    claim = worker.claim(["default"], 90)
    with Heartbeat(db_url, "hb-late", claim, lease_seconds=90, interval=30,
                   start_on_enter=False) as hb:
        queue.request_cancel(job["id"])
        time.sleep(0.5)
        assert not hb.cancel_requested.is_set()  # nothing runs before start()
        hb.start()
        hb.start()  # a second call changes nothing
        wait_for(hb.cancel_requested.is_set, timeout=10)
    worker.close()


def test_a_heartbeat_never_started_ends_cleanly(db_url):
    worker = Queue.open(db_url, "hb-never")
    worker.enqueue(prompt="p")
    claim = worker.claim(["default"], 90)
    with Heartbeat(db_url, "hb-never", claim, lease_seconds=90, start_on_enter=False) as hb:
        pass
    hb.start()  # after the end: still nothing starts
    assert hb._thread.ident is None
    worker.close()
