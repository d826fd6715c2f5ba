"""The claim walks only each concurrency key's head (jobs.key_head, migration 0007). What a
web app relies on: a job enqueued while its key's head leaves the queue — claimed,
cancelled, failed by a dependency, deleted — in whichever order the two transactions run,
is still claimed later (never lost), and the order within a key holds after requeues."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from runner.queue import Queue


def _insert(conn, key: str, **cols) -> uuid.UUID:
    names = ["prompt", "concurrency_key", *cols]
    values = ["p", key, *cols.values()]
    return conn.execute(
        f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) RETURNING id",
        values).fetchone()[0]


def _wait_until_blocked(db_url: str, app_name: str) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                            "AND wait_event_type = 'Lock'", (app_name,)).fetchone():
                return
            time.sleep(0.01)
    raise AssertionError(f"{app_name} never waited on a lock")


def _in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn)
    t.start()
    return t


def _assert_every_key_has_its_head(db_url: str) -> None:
    """The invariant: the oldest queued job of every key is flagged."""
    with psycopg.connect(db_url) as conn:
        unflagged = conn.execute(
            "SELECT DISTINCT ON (concurrency_key) concurrency_key, id, key_head FROM jobs "
            "WHERE status = 'queued' AND concurrency_key IS NOT NULL "
            "ORDER BY concurrency_key, enqueue_seq").fetchall()
    assert [r for r in unflagged if not r[2]] == []


def _drain(queue: Queue) -> list[uuid.UUID]:
    """Claim and finish until nothing is claimable: the ids in claim order."""
    order = []
    while (claim := queue.claim(["default"], 60)) is not None:
        order.append(claim.id)
        assert queue.finish(claim, "succeeded", result={})
    return order


def test_a_job_is_flagged_only_when_it_is_its_keys_oldest_queued_job(db_url, queue):
    with psycopg.connect(db_url, autocommit=True) as conn:
        a, b = _insert(conn, "k"), _insert(conn, "k")
        other = _insert(conn, "m")
        flags = dict(conn.execute("SELECT id, key_head FROM jobs").fetchall())
    assert flags == {a: True, b: False, other: True}
    claim = queue.claim(["default"], 60)
    assert claim.id == a
    assert queue.get(b)["key_head"] and not queue.get(a)["key_head"]  # handed over
    _assert_every_key_has_its_head(db_url)


# What takes the head out of the queue, as plain SQL (a worker or a web app).
DEPARTURES = {
    "claimed": "UPDATE jobs SET status = 'claimed', claim_token = gen_random_uuid(), "
               "lease_until = now() + interval '1 hour' WHERE id = %s",
    "cancelled": "UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = %s",
    "failed": "UPDATE jobs SET status = 'failed', finished_at = now() WHERE id = %s",
    "deleted": "DELETE FROM jobs WHERE id = %s",
}


@pytest.mark.parametrize("departure", sorted(DEPARTURES))
def test_an_enqueue_waiting_for_the_heads_departure_is_not_lost(db_url, queue, departure):
    """The head leaves in an open transaction; the enqueue of the key's next job waits for
    it (the head is locked), then sees it gone and flags its own job."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        head = _insert(conn, "k")
    leaving = psycopg.connect(db_url)
    leaving.execute(DEPARTURES[departure], (head,))
    new: list[uuid.UUID] = []

    def enqueue() -> None:
        with psycopg.connect(db_url, application_name="enqueuer") as conn:
            new.append(_insert(conn, "k"))

    t = _in_thread(enqueue)
    _wait_until_blocked(db_url, "enqueuer")
    leaving.commit()
    leaving.close()
    t.join(30)
    with psycopg.connect(db_url, autocommit=True) as conn:  # the head's run, if any, ends
        conn.execute("UPDATE jobs SET status = 'succeeded', finished_at = now() "
                     "WHERE id = %s AND status = 'claimed'", (head,))
    _assert_every_key_has_its_head(db_url)
    assert _drain(queue) == new


@pytest.mark.parametrize("departure", ["claim", "cancel", "fail_dependents", "delete"])
def test_a_job_enqueued_in_an_open_transaction_is_not_lost_when_the_head_leaves(
        db_url, queue, departure):
    """The web app's enqueue transaction stays open while the key's head is claimed,
    cancelled, failed by its dependency or deleted; then it commits: its job is claimed."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        deps = [uuid.uuid4()] if departure == "fail_dependents" else None  # a missing one
        head = _insert(conn, "k", depends_on=deps)
    enqueuing = psycopg.connect(db_url)
    new = _insert(enqueuing, "k")  # open: the head is held FOR SHARE until it commits

    if departure == "claim":
        assert queue.claim(["default"], 60) is None  # passed by, the worker does not wait
        enqueuing.commit()
        claim = queue.claim(["default"], 60)
        assert claim.id == head
        assert queue.finish(claim, "succeeded", result={})
    elif departure == "fail_dependents":
        assert queue.fail_dependents() == []  # left for the next iteration, not waited for
        enqueuing.commit()
        assert queue.fail_dependents() == [head]
    else:
        def leave() -> None:
            with Queue.open(db_url, "web-app") as web:
                if departure == "cancel":
                    assert web.request_cancel(head) == "cancelled"
                else:
                    with psycopg.connect(db_url, autocommit=True) as conn:
                        conn.execute("DELETE FROM jobs WHERE id = %s", (head,))

        t = _in_thread(leave)
        time.sleep(0.2)  # the web app's statement waits for the enqueue transaction
        enqueuing.commit()
        t.join(30)
    enqueuing.close()
    _assert_every_key_has_its_head(db_url)
    assert _drain(queue) == [new]


def test_a_requeued_head_and_a_retried_older_job_keep_the_order_within_the_key(db_url, queue):
    with psycopg.connect(db_url, autocommit=True) as conn:
        a, b, c = _insert(conn, "k"), _insert(conn, "k"), _insert(conn, "k")
    first = queue.claim(["default"], 60)
    assert first.id == a
    assert queue.finish(first, "failed", error="boom")
    second = queue.claim(["default"], 60)
    assert second.id == b
    # b goes back (a crash, a usage limit) while c holds the flag: both are flagged now
    assert queue.requeue(second, event="rolled_back", reason="test", refund_attempt=True)
    assert queue.retry(a)  # and the operator sends a round again: it is the oldest
    _assert_every_key_has_its_head(db_url)
    assert _drain(queue) == [a, b, c]


def test_a_job_enqueued_while_the_head_runs_waits_for_the_requeued_head(db_url, queue):
    with psycopg.connect(db_url, autocommit=True) as conn:
        head = _insert(conn, "k")
    claim = queue.claim(["default"], 60)
    enqueuing = psycopg.connect(db_url)
    new = _insert(enqueuing, "k")  # no queued head of k now: flagged itself
    assert queue.requeue(claim, event="rolled_back", reason="test", refund_attempt=True)
    enqueuing.commit()
    enqueuing.close()
    _assert_every_key_has_its_head(db_url)
    assert _drain(queue) == [head, new]


def test_a_key_change_hands_the_flag_over(db_url, queue):
    with psycopg.connect(db_url, autocommit=True) as conn:
        a, b = _insert(conn, "k"), _insert(conn, "k")
        conn.execute("UPDATE jobs SET concurrency_key = 'm' WHERE id = %s", (a,))
    _assert_every_key_has_its_head(db_url)
    assert sorted(_drain(queue)) == sorted([a, b])


def test_concurrent_enqueuers_and_claimers_lose_no_job(db_url):
    """4 enqueuers (each job in a transaction held open a little) and 4 claimers on 3 keys of
    limit 1: every job is claimed (the order within a key is test_enqueue_guarantees')."""
    n_per_enqueuer, keys = 40, ["a", "b", "c"]
    total = 4 * n_per_enqueuer
    done = threading.Event()
    errors: list[BaseException] = []
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def enqueuer(i: int) -> None:
        try:
            with psycopg.connect(db_url) as conn:
                for n in range(n_per_enqueuer):
                    _insert(conn, keys[(i + n) % len(keys)])
                    time.sleep(0.002)
                    conn.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def claimer(i: int) -> None:
        try:
            with Queue.open(db_url, f"claimer-{i}") as q:
                while not done.is_set():
                    claim = q.claim(["default"], 60)
                    if claim is None:
                        time.sleep(0.002)
                        continue
                    with lock:
                        claimed.append((claim.job["concurrency_key"], claim.job["enqueue_seq"]))
                        if len(claimed) == total:
                            done.set()
                    assert q.finish(claim, "succeeded", result={})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            done.set()

    threads = [threading.Thread(target=enqueuer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    done.wait(timeout=120)
    done.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(claimed) == total, "a job was never claimed"
    _assert_every_key_has_its_head(db_url)


@pytest.mark.parametrize("first", ["older head", "requeued head"])
def test_two_heads_of_one_key_leaving_at_once_leave_the_next_job_flagged(db_url, queue, first):
    """A (oldest) and B (requeued, so flagged too) leave in two open transactions at once:
    each hand-over may think the other head still holds the key; C must end up flagged."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        a, b, c = _insert(conn, "k"), _insert(conn, "k"), _insert(conn, "k")
        conn.execute("UPDATE jobs SET key_head = true WHERE id = %s", (b,))  # as a requeue leaves it
    order = [a, b] if first == "older head" else [b, a]
    one = psycopg.connect(db_url)
    one.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (order[0],))

    def second() -> None:
        with psycopg.connect(db_url, application_name="second") as conn:
            conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (order[1],))

    t = _in_thread(second)
    time.sleep(0.2)  # the second may wait for the first's lock on its row
    one.commit()
    one.close()
    t.join(30)
    _assert_every_key_has_its_head(db_url)
    assert _drain(queue) == [c]


def test_the_migration_flags_the_oldest_queued_job_of_each_key(empty_db_url):
    from runner.migrate import upgrade

    upgrade(empty_db_url, "0006_guard")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        a, b = _insert(conn, "k"), _insert(conn, "k")
        done = _insert(conn, "m", status="succeeded")
        m = _insert(conn, "m")
        free = conn.execute("INSERT INTO jobs (prompt) VALUES ('no key') RETURNING id").fetchone()[0]
    upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        flags = dict(conn.execute("SELECT id, key_head FROM jobs").fetchall())
    assert flags == {a: True, b: False, done: False, m: True, free: False}
