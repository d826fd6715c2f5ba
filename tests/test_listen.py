"""runner/listen.py: the wait loop keeps the worker's presence fresh while it waits."""

from __future__ import annotations

import threading

from runner.listen import Listener, wait_and_claim


def test_presence_is_called_while_waiting(db_url):
    calls = []
    found = wait_and_claim(lambda: None, Listener(db_url, "w", ["default"]), wait_seconds=1.6,
                           poll_seconds=5, stop=threading.Event(),
                           presence=lambda: calls.append(1), presence_seconds=0.4)
    assert found is None
    assert 2 <= len(calls) <= 4


def test_the_one_connection_dropped_before_a_claim_is_reopened_and_the_job_claimed(db_url):
    from runner.listen import SharedListener
    from runner.queue import Queue

    with Queue.open(db_url, "w-shared") as q, Queue.open(db_url, "producer") as producer:
        first_pid = q.conn.info.backend_pid
        calls = []

        def claim():
            calls.append(1)
            if len(calls) == 1:
                return None  # the empty look before LISTEN
            if len(calls) == 2:  # LISTEN is in place; the job comes, the connection goes
                producer.enqueue(prompt="p")
                producer.conn.execute("SELECT pg_terminate_backend(%s)", [first_pid])
            return q.claim(["default"], 60)

        found = wait_and_claim(claim, SharedListener(q, ["default"]), wait_seconds=30,
                               poll_seconds=600, stop=threading.Event())
        assert found is not None and found.job["prompt"] == "p"
        assert q.conn.info.backend_pid != first_pid
        # Done waiting: the connection no longer listens and has its own name back.
        name = q.conn.execute("SHOW application_name").fetchone()["application_name"]
        assert name == "runner:queue:w-shared"


class _CountingQueue:
    """Just enough of a Queue for claim_or_wait: counts the housekeeping statements."""

    def __init__(self) -> None:
        self.requeues = self.claims = 0

    def requeue_expired(self):
        self.requeues += 1
        return []

    def fail_dependents(self):
        return []

    def claim(self, *args):
        self.claims += 1
        return None

    def worker_seen(self, *args, **kwargs):
        pass

    def touch_worker(self):
        pass

    def warm_up(self, default_agent):
        pass


def test_a_waiting_workers_poll_looks_for_expired_leases_only_now_and_then(tmp_path):
    """Every poll claims; expired leases are looked for at the first claim and then at most
    every HOUSEKEEPING_SECONDS or half a lease (one_job.claim_or_wait)."""
    from types import SimpleNamespace

    from runner import one_job

    def run(lease_seconds: float) -> _CountingQueue:
        queue = _CountingQueue()
        settings = SimpleNamespace(poll_seconds=0.05, lease_seconds=lease_seconds, queues=["default"],
                                   concurrency_limits={}, default_agent="command", listen_dsn=None,
                                   dsn="x", wait_seconds=1.0, worker_id="w", state_dir=tmp_path,
                                   webhook_url=None)
        assert one_job.claim_or_wait(queue, settings, threading.Event()) is None
        return queue

    long_lease = run(300)
    assert long_lease.claims >= 10 and long_lease.requeues == 1
    short_lease = run(0.4)  # half a lease: 0.2 s
    assert 3 <= short_lease.requeues <= 7 and short_lease.claims > short_lease.requeues
