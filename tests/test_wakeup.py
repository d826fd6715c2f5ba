"""runner/wakeup.py and its users: a stop, the agent's exit and the job's end are acted on
when they happen, not at the next poll. Each test makes the poll an hour long, so only
the wake-up can end it in time; a watchdog thread turns a missed wake-up into a failure
instead of an hour-long hang. Real processes, a real database."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path

from runner import heartbeat, process
from runner.agents.base import AgentCommand, StreamReader
from runner.heartbeat import Heartbeat
from runner.outcome import StopReason
from runner.queue import Queue
from runner.wakeup import Wakeup, pidfd, readable
from tests.waiting import wait_for

HOUR = 3600.0
WATCHDOG = 30.0


class Nothing(StreamReader):
    def feed(self, stream: str, line: str) -> None:
        pass


def in_thread(fn):
    """Run ``fn`` in a thread; its result, or a failure if it is still running after the
    watchdog's time (the wake-up it waited for never came)."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=fn()), daemon=True)
    thread.start()
    thread.join(WATCHDOG)
    assert not thread.is_alive(), "still waiting: the wake-up did not end the wait"
    return box["result"]


def command(tmp_path: Path, script: str) -> AgentCommand:
    work = tmp_path / "job" / "work"
    work.mkdir(parents=True, exist_ok=True)
    # an id of its own: a run's end SIGKILLs whatever carries its marker (other xdist worker)
    marker = f"job-wakeup-test-{uuid.uuid4().hex[:8]}"
    return AgentCommand(argv=[sys.executable, "-c", script],
                        env={"PATH": os.environ["PATH"], "RUNNER_JOB_ID": marker}, cwd=work)


def test_a_wake_makes_it_readable_until_cleared_and_a_closed_one_ignores_wakes():
    w = Wakeup()
    assert readable([w.fileno()], 0) == set()
    w.wake()
    w.wake()  # twice is once
    assert readable([w.fileno()], 0) == {w.fileno()}
    w.clear()
    assert readable([w.fileno()], 0) == set()
    w.close()
    w.wake()  # after close: nothing written anywhere (its number may be another file's)


def test_a_pidfd_is_readable_once_the_process_exits(tmp_path):
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    fd = pidfd(proc.pid)
    assert fd is not None  # Linux 5.3+: these machines and the image
    try:
        assert readable([fd], 0) == set()
        proc.stdin.close()  # it exits
        assert readable([fd], WATCHDOG) == {fd}
        assert proc.wait(5) == 0
    finally:
        os.close(fd)


def test_the_agent_loop_acts_on_a_stop_when_woken_not_at_its_next_poll(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "_POLL_SECONDS", HOUR)
    started = tmp_path / "started"
    script = f"open({str(started)!r}, 'w').close(); import time; time.sleep(600)"
    waking, asked = Wakeup(), threading.Event()

    def cancel_when_running():
        wait_for(started.exists, WATCHDOG, "the agent")
        asked.set()
        waking.wake()

    threading.Thread(target=cancel_when_running, daemon=True).start()
    result = in_thread(lambda: process.run_agent(
        command(tmp_path, script), reader=Nothing(), emit=lambda s, ln: None,
        should_stop=lambda: StopReason.CANCELLED if asked.is_set() else None,
        grace_seconds=HOUR, wakeup=waking))
    assert result.stop_reason == StopReason.CANCELLED
    assert result.exit_code == -15  # SIGTERM ended it; the hour-long grace was not waited out
    waking.close()


def test_the_agent_loop_sees_the_agent_exit_without_polling(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "_POLL_SECONDS", HOUR)
    result = in_thread(lambda: process.run_agent(
        command(tmp_path, "import time; time.sleep(0.3); raise SystemExit(3)"), reader=Nothing(),
        emit=lambda s, ln: None, should_stop=lambda: None, grace_seconds=2.0))
    assert result.exit_code == 3 and result.stop_reason is None


def test_the_heartbeat_hears_a_cancel_and_ends_with_the_job_without_its_slice(db_url, monkeypatch):
    """A slice an hour long: the cancel's notification still reaches it (the socket is
    waited on), it calls on_stop, and leaving the block ends its thread at once."""
    import psycopg

    monkeypatch.setattr(heartbeat, "LISTEN_SLICE_SECONDS", HOUR)
    worker = Queue.open(db_url, "hb-wake")
    job = worker.enqueue(prompt="p")
    claim = worker.claim(["default"], 90)
    stopped = threading.Event()
    with psycopg.connect(db_url, autocommit=True) as admin:
        def run() -> bool:
            with Heartbeat(db_url, "hb-wake", claim, lease_seconds=90, interval=HOUR) as hb:
                hb.on_stop = stopped.set
                wait_for(lambda: admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'idle'",
                    ["runner:heartbeat:hb-wake"]).fetchone()[0] == 1, WATCHDOG, "the heartbeat's LISTEN")
                admin.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", [job["id"]])
                assert stopped.wait(WATCHDOG), "on_stop was not called"
                assert hb.stop_reason() == StopReason.CANCELLED
                hb.report({"tool": "Bash", "state": "started"}, urgent=True)
                wait_for(lambda: hb.progress_written == 1, WATCHDOG, "the urgent snapshot written")
            return True

        assert in_thread(run)
    worker.close()


def test_a_line_the_agent_prints_reaches_the_log_while_it_still_runs(tmp_path, monkeypatch):
    """inotify on its output files: the line is handed on when written, not at the next
    poll (an hour here) nor at the agent's exit."""
    monkeypatch.setattr(process, "_POLL_SECONDS", HOUR)
    go = tmp_path / "go"
    script = (f"import os, time; print('first line', flush=True); end = time.time() + 60\n"
              f"while not os.path.exists({str(go)!r}) and time.time() < end: time.sleep(0.01)\n")
    seen = threading.Event()

    def emit(stream: str, line: str) -> None:
        if line == "first line":
            seen.set()

    def release_when_seen():
        if seen.wait(WATCHDOG):
            go.touch()

    threading.Thread(target=release_when_seen, daemon=True).start()
    result = in_thread(lambda: process.run_agent(
        command(tmp_path, script), reader=Nothing(), emit=emit, should_stop=lambda: None,
        grace_seconds=2.0))
    assert seen.is_set() and result.exit_code == 0


def test_urgent_snapshots_faster_than_a_slice_wait_for_it_as_one_batch(db_url, monkeypatch):
    """The first urgent snapshot wakes the thread; ones that follow within a slice of that
    write wait for the slice's end and go out together: an agent printing tool events
    without end costs one batch of writes per slice, as before the wake-up."""
    monkeypatch.setattr(heartbeat, "LISTEN_SLICE_SECONDS", 3.0)
    worker = Queue.open(db_url, "hb-burst")
    worker.enqueue(prompt="p")
    claim = worker.claim(["default"], 90)
    with Heartbeat(db_url, "hb-burst", claim, lease_seconds=90, interval=HOUR) as hb:
        hb.report({"tool": "Bash", "state": "started"}, urgent=True)
        wait_for(lambda: hb.progress_written == 1, WATCHDOG, "the first snapshot, at once")
        hb.report({"tool": "Bash", "state": "ended"}, urgent=True)
        hb.report({"tool": "Read", "state": "started"}, urgent=True)
        time.sleep(0.3)
        assert hb.progress_written == 1  # not woken: a batch went out less than a slice ago
        wait_for(lambda: hb.progress_written == 3, WATCHDOG, "both, at the slice's end")
    worker.close()


def test_without_pidfd_and_inotify_the_loop_still_sees_output_exit_and_stop(tmp_path, monkeypatch):
    """An older kernel or a seccomp profile that refuses pidfd_open and inotify: the poll
    (50 ms) finds what the descriptors would have told."""
    class NoInotify:
        polling, fd = True, -1

    monkeypatch.setattr(process, "pidfd", lambda pid: None)
    monkeypatch.setattr(process, "FileWatch", lambda path: NoInotify())
    lines: list[str] = []
    done = in_thread(lambda: process.run_agent(
        command(tmp_path, "print('hello', flush=True); raise SystemExit(4)"), reader=Nothing(),
        emit=lambda s, ln: lines.append(ln), should_stop=lambda: None, grace_seconds=2.0))
    assert done.exit_code == 4 and lines == ["hello"]
    asked = threading.Event()
    threading.Timer(0.3, asked.set).start()
    stopped = in_thread(lambda: process.run_agent(
        command(tmp_path, "import time; time.sleep(600)"), reader=Nothing(), emit=lambda s, ln: None,
        should_stop=lambda: StopReason.CANCELLED if asked.is_set() else None, grace_seconds=2.0))
    assert stopped.stop_reason == StopReason.CANCELLED and stopped.exit_code == -15
