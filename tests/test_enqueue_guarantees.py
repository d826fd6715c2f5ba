"""What a web app relies on when it enqueues: one job per dedupe key, one job at a time
per branch (concurrency key) in enqueue order, and pipelines (depends_on) — on the real
database, with concurrent enqueuers and claimers on their own connections."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from runner import client
from runner.errors import InvalidJob
from runner.queue import Queue

REPO = "https://github.com/acme/app.git"


def _enqueue(db_url, **kw):
    with psycopg.connect(db_url) as conn:
        return client.enqueue(conn, prompt=kw.pop("prompt", "p"), **kw)


# -- dedupe_key ---------------------------------------------------------------------------

def test_a_second_enqueue_with_the_key_returns_the_first_job(db_url, queue):
    first = _enqueue(db_url, dedupe_key="order-42")
    again = _enqueue(db_url, dedupe_key="order-42", prompt="double click")
    assert first.created and not again.created and again.id == first.id
    assert len(queue.list()) == 1
    other = _enqueue(db_url, dedupe_key="order-43")
    assert other.created and other.id != first.id


def test_the_key_is_free_again_once_the_job_finished(db_url, queue):
    first = _enqueue(db_url, dedupe_key="nightly")
    claim = queue.claim(["default"], 60)
    assert _enqueue(db_url, dedupe_key="nightly").id == first.id  # claimed: still not finished
    queue.finish(claim, "succeeded", result={})
    second = _enqueue(db_url, dedupe_key="nightly")
    assert second.created and second.id != first.id


def test_concurrent_enqueuers_of_one_key_make_one_job(db_url, queue):
    """16 enqueuers, each in its own transaction that stays open a little after its INSERT:
    exactly one job, and every caller is told its id."""
    n = 16
    barrier = threading.Barrier(n)
    results: list[client.Enqueued] = []
    errors: list[BaseException] = []

    def enqueuer(i: int) -> None:
        try:
            with psycopg.connect(db_url) as conn:
                barrier.wait()
                job = client.enqueue(conn, prompt=f"click {i}", dedupe_key="button-1")
                time.sleep(random.uniform(0, 0.05))  # the caller's own work in the transaction
                conn.commit()
            results.append(job)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=enqueuer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = queue.list()
    assert len(rows) == 1
    assert {r.id for r in results} == {rows[0]["id"]}
    assert sum(r.created for r in results) == 1


def test_the_documented_plain_sql_dedupes(db_url, queue):
    sql = ("INSERT INTO jobs (prompt, dedupe_key) VALUES (%s, %s) "
           "ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'claimed', 'running') DO NOTHING "
           "RETURNING id")
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = conn.execute(sql, ("a", "k")).fetchone()
        second = conn.execute(sql, ("b", "k")).fetchone()
        existing = conn.execute("SELECT id FROM jobs WHERE dedupe_key = 'k' AND status IN "
                                "('queued', 'claimed', 'running')").fetchone()
    assert first is not None and second is None and existing[0] == first[0]


# -- concurrency keys ---------------------------------------------------------------------

def test_jobs_on_one_branch_wait_for_each_other_in_enqueue_order(db_url, queue):
    a = _enqueue(db_url, repo_url=REPO, branch="feature/x")
    b = _enqueue(db_url, repo_url=REPO, branch="feature/x", priority=9)  # priority: not within a key
    other = _enqueue(db_url, repo_url=REPO, branch="feature/y")
    assert queue.get(a.id)["concurrency_key"] == f"{REPO}#feature/x"  # the default key
    first = queue.claim(["default"], 60)
    assert first.id == a.id
    second = queue.claim(["default"], 60)
    assert second.id == other.id  # b waits for a; another branch does not
    assert queue.claim(["default"], 60) is None
    queue.finish(first, "failed", error="boom")  # finished either way frees the key
    assert queue.claim(["default"], 60).id == b.id


def test_an_earlier_job_in_backoff_keeps_its_place(db_url, queue):
    a = _enqueue(db_url, concurrency_key="deploy")
    b = _enqueue(db_url, concurrency_key="deploy")
    claim = queue.claim(["default"], 60)
    assert claim.id == a.id
    queue.requeue(claim, event="retry_scheduled", reason="flaky", refund_attempt=False,
                  run_after=datetime.now(timezone.utc) + timedelta(hours=1))
    assert queue.claim(["default"], 60) is None  # b does not overtake a
    assert queue.get(b.id)["status"] == "queued"


def test_limits_from_the_job_and_from_the_operator(db_url, queue):
    for _ in range(4):
        _enqueue(db_url, concurrency_key="wide", concurrency_limit=2)
    claims = [queue.claim(["default"], 60) for _ in range(3)]
    assert [c is not None for c in claims] == [True, True, False]
    # the operator's limit for the key wins over the job's
    assert queue.claim(["default"], 60, {"wide": 3}) is not None
    assert queue.claim(["default"], 60, {"wide": 3}) is None


def test_any_status_change_keeps_the_count(db_url, queue):
    """A lease that expires, a web app that cancels or deletes a row: the key is free again."""
    _enqueue(db_url, concurrency_key="k")
    _enqueue(db_url, concurrency_key="k")
    first = queue.claim(["default"], 60)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = %s", (first.id,))
    assert queue.requeue_expired() == [first.id]
    again = queue.claim(["default"], 60)
    assert again.id == first.id  # still first in its key
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM jobs WHERE id = %s", (first.id,))
        assert conn.execute("SELECT active FROM concurrency_keys WHERE key = 'k'").fetchone()[0] == 0
    assert queue.claim(["default"], 60) is not None


def _wait_until_blocked(db_url, app_names: set[str]) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute("SELECT application_name FROM pg_stat_activity "
                                "WHERE wait_event_type = 'Lock'").fetchall()
            if app_names <= {r[0] for r in rows}:
                return
            time.sleep(0.01)
    raise AssertionError(f"{app_names} never waited on a lock")


def test_a_claim_on_a_stale_snapshot_cannot_take_a_second_slot(db_url, queue):
    """The READ COMMITTED race the key's row guards against. A web app's long transaction
    inserts X (created first, committed last); B of the same key is committed meanwhile.
    Worker 1's claim picks B (X not yet visible) and is held at the key's row; X commits;
    worker 2's claim starts, sees X as the key's oldest job and B still queued, so by its
    snapshot the key is free. Both then go on: only one may win."""
    # The key has been used before (the first INSERT of a new key makes other INSERTs of
    # it wait for its transaction, which would serialise this test before it starts).
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO concurrency_keys (key) VALUES ('k')")
    slow = psycopg.connect(db_url)
    slow.execute("INSERT INTO jobs (prompt, concurrency_key) VALUES ('X, long transaction', 'k')")
    b = _enqueue(db_url, prompt="B", concurrency_key="k")
    holder = psycopg.connect(db_url)
    holder.execute("SELECT 1 FROM concurrency_keys WHERE key = 'k' FOR UPDATE")
    got: dict[str, object] = {}

    def claim(name: str) -> None:
        with Queue.open(db_url, name) as q:
            got[name] = q.claim(["default"], 60)

    w1 = threading.Thread(target=claim, args=("w1",))
    w1.start()
    _wait_until_blocked(db_url, {"runner:queue:w1"})
    slow.commit()  # X becomes visible to statements that start from now on
    w2 = threading.Thread(target=claim, args=("w2",))
    w2.start()
    _wait_until_blocked(db_url, {"runner:queue:w1", "runner:queue:w2"})
    holder.commit()
    w1.join(30)
    w2.join(30)
    slow.close()
    holder.close()
    won = [c for c in got.values() if c is not None]
    assert len(won) == 1, f"both claims won: {got}"
    assert got["w1"] is not None and got["w1"].id == b.id
    with psycopg.connect(db_url) as conn:
        active = conn.execute("SELECT count(*) FROM jobs WHERE concurrency_key = 'k' "
                              "AND status IN ('claimed', 'running')").fetchone()[0]
        counted = conn.execute("SELECT active FROM concurrency_keys WHERE key = 'k'").fetchone()[0]
    assert active == counted == 1


def test_eight_claimers_never_run_two_jobs_of_one_key(db_url, queue):
    """8 workers (threads, each its own connection) over 300 jobs with 20 keys of limit 1:
    from job_events, never two jobs of one key active at once; all done; order kept."""
    keys = [f"{REPO}#branch-{k}" for k in range(20)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(300):
            conn.execute("INSERT INTO jobs (prompt, repo_url, branch) VALUES (%s, %s, %s)",
                         (f"job {i}", REPO, f"branch-{random.randrange(20)}"))
    done = threading.Event()
    errors: list[BaseException] = []
    finished = [0]
    lock = threading.Lock()

    def worker(n: int) -> None:
        q = Queue.open(db_url, f"worker-{n}")
        try:
            while not done.is_set():
                claim = q.claim(["default"], 60)
                if claim is None:
                    time.sleep(0.005)
                    continue
                time.sleep(random.uniform(0, 0.01))  # the agent at work
                assert q.finish(claim, "succeeded", result={})
                with lock:
                    finished[0] += 1
                    if finished[0] == 300:
                        done.set()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            done.set()
        finally:
            q.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    done.wait(timeout=240)
    done.set()
    for t in threads:
        t.join()
    assert errors == []

    with psycopg.connect(db_url) as conn:
        statuses = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
        events = conn.execute(
            "SELECT e.id, e.event, e.job_id, j.concurrency_key, e.worker_id FROM job_events e "
            "JOIN jobs j ON j.id = e.job_id WHERE e.event IN ('claimed', 'succeeded') ORDER BY e.id"
        ).fetchall()
        enqueue_order = conn.execute(
            "SELECT concurrency_key, id FROM jobs ORDER BY enqueue_seq").fetchall()
        counts = conn.execute("SELECT key, active FROM concurrency_keys").fetchall()
    assert statuses == [("succeeded", 300)]
    active: dict[str, int] = defaultdict(int)
    claimed_order: dict[str, list] = defaultdict(list)
    for _, event, job_id, key, _worker in events:
        if event == "claimed":
            active[key] += 1
            assert active[key] == 1, f"two jobs of {key} active at once (event order)"
            claimed_order[key].append(job_id)
        else:
            active[key] -= 1
    expected: dict[str, list] = defaultdict(list)
    for key, job_id in enqueue_order:
        expected[key].append(job_id)
    assert claimed_order == expected
    assert len({w for *_, w in events}) > 1  # several workers really took part
    assert sorted(k for k, _ in counts) == sorted(set(expected)) and {a for _, a in counts} == {0}


# -- depends_on ---------------------------------------------------------------------------

def test_a_dependent_waits_until_all_its_dependencies_succeeded(db_url, queue):
    a = _enqueue(db_url, prompt="implement")
    b = _enqueue(db_url, prompt="test")
    review = _enqueue(db_url, prompt="review", depends_on=[a.id, b.id])
    first, second = queue.claim(["default"], 60), queue.claim(["default"], 60)
    assert {first.id, second.id} == {a.id, b.id}
    assert queue.claim(["default"], 60) is None
    queue.finish(first, "succeeded", result={})
    assert queue.claim(["default"], 60) is None  # one still running
    queue.finish(second, "succeeded", result={})
    assert queue.fail_dependents() == []
    assert queue.claim(["default"], 60).id == review.id


@pytest.mark.parametrize("end", ["failed", "cancelled"])
def test_a_failed_dependency_fails_the_whole_chain_without_running(db_url, queue, end):
    a = _enqueue(db_url, prompt="implement")
    b = _enqueue(db_url, prompt="review", depends_on=[a.id])
    c = _enqueue(db_url, prompt="fix", depends_on=[b.id])
    claim = queue.claim(["default"], 60)
    assert claim.id == a.id
    queue.finish(claim, end, error="the agent gave up")
    assert set(queue.fail_dependents()) == {b.id, c.id}
    rows = {j: queue.get(j) for j in (b.id, c.id)}
    assert rows[b.id]["status"] == "failed" and rows[b.id]["attempts"] == 0
    assert rows[b.id]["error"] == f"dependency {a.id} {end}, so this job did not run"
    assert rows[c.id]["error"] == f"dependency {b.id} failed, so this job did not run"
    assert [e["event"] for e in queue.events(c.id)] == ["enqueued", "failed"]
    assert queue.claim(["default"], 60) is None


def test_a_pipeline_in_one_transaction_and_unknown_dependencies(db_url, queue):
    with psycopg.connect(db_url) as conn:
        first = client.enqueue(conn, prompt="implement")
        second = client.enqueue(conn, prompt="review", depends_on=[first.id])
        conn.commit()
    assert queue.get(second.id)["depends_on"] == [first.id]
    ghost = uuid.uuid4()
    with pytest.raises(InvalidJob, match=f"depends_on names jobs that do not exist: {ghost}"):
        _enqueue(db_url, depends_on=[ghost])
    with pytest.raises(InvalidJob, match="not a job id"):
        _enqueue(db_url, depends_on=["12"])
    # a plain INSERT naming a job that does not exist ends failed, saying so
    with psycopg.connect(db_url, autocommit=True) as conn:
        orphan = conn.execute("INSERT INTO jobs (prompt, depends_on) VALUES ('x', ARRAY[%s]::uuid[]) "
                              "RETURNING id", (str(ghost),)).fetchone()[0]
    queue.fail_dependents()
    assert queue.get(orphan)["error"] == f"dependency {ghost} does not exist, so this job did not run"


# -- pause / resume -----------------------------------------------------------------------

def test_a_paused_queue_is_not_claimed_from_until_resumed_or_its_time_is_up(db_url, queue):
    job = _enqueue(db_url, prompt="waits", queue="gpu")
    other = _enqueue(db_url, prompt="other queue")
    queue.pause("gpu", None, "model API overloaded")
    assert queue.claim(["gpu"], 60) is None
    assert queue.claim(["gpu", "default"], 60).id == other.id  # other queues go on
    other_worker = Queue.open(db_url, "other-worker")
    try:
        assert other_worker.claim(["gpu"], 60) is None  # every worker honours it
    finally:
        other_worker.close()
    assert [p["queue"] for p in queue.pauses()] == ["gpu"]
    assert queue.resume("gpu") and not queue.resume("gpu")
    assert queue.claim(["gpu"], 60).id == job.id
    # a pause with a time limit ends by itself
    _enqueue(db_url, prompt="later", queue="gpu")
    queue.pause("gpu", datetime.now(timezone.utc) - timedelta(seconds=1))
    assert queue.pauses() == []
    assert queue.claim(["gpu"], 60) is not None


def test_cli_pause_and_resume(runner_env, queue):
    import subprocess
    import sys
    from tests.conftest import REPO as ROOT

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "runner", *args], cwd=ROOT, env=runner_env,
                              capture_output=True, text=True, timeout=60)

    proc = cli("pause", "default", "--for", "30m", "--reason", "deploy")
    assert proc.returncode == 0, proc.stderr
    assert "queue 'default' is paused until" in proc.stdout and "deploy" in proc.stdout
    queue.enqueue(prompt="x")
    assert queue.claim(["default"], 60) is None
    assert "queue 'default' is paused" in cli("jobs").stdout
    assert "queue 'default' is paused" in cli("workers").stdout
    bad = cli("pause", "default", "--for", "soon")
    assert bad.returncode == 2 and "is not a duration like 90s, 30m, 2h or 1d" in bad.stderr
    assert cli("resume", "default").returncode == 0
    again = cli("resume", "default")
    assert again.returncode == 1 and "queue 'default' is not paused" in again.stderr
    assert queue.claim(["default"], 60) is not None
