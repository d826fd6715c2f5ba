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
