"""`runner jobs --watch`: redrawn when a job changes (LISTEN), Ctrl-C exits 0."""

from __future__ import annotations

import queue as stdqueue
import signal
import subprocess
import sys
import threading

from tests.conftest import REPO
from tests.test_health import cli_env


def test_watch_shows_a_new_job_and_exits_0_on_ctrl_c(tmp_path, db_url, queue):
    proc = subprocess.Popen([sys.executable, "-m", "runner", "jobs", "--watch"],
                            env=cli_env(tmp_path, DATABASE_URL=db_url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines: stdqueue.Queue[str] = stdqueue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def until(text: str, timeout: float = 15) -> None:
        while True:
            line = lines.get(timeout=timeout)
            if text in line:
                return

    try:
        until("runner jobs --watch")
        job = queue.enqueue(prompt="p", queue="watched")
        until(str(job["id"]))
        queue.request_cancel(job["id"])
        until("cancelled before it started")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
