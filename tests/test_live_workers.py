"""Issue 13, item 6: `runner workers` tells a waiting worker from one starting, and shows a
running one's job, progress and time so far; `runner jobs --watch` shows progress."""

from __future__ import annotations

import queue as stdqueue
import signal
import subprocess
import sys
import threading

from tests.agents.proc import wait_for
from tests.conftest import REPO, fake, start_one_job
from tests.test_budget import _assistant, fake_claude  # noqa: F401 - the fixture
from tests.test_cli import runner
from tests.test_health import cli_env


def _worker_line(env, worker_id: str) -> str:
    out = runner(env, "workers").stdout
    return next((line for line in out.splitlines() if line.startswith(worker_id)), "")


def test_a_waiting_worker_shows_waiting_then_its_job_and_progress(fake_claude, queue, git_repo):
    env = {**fake_claude, "RUNNER_WORKER_ID": "w-live", "RUNNER_WAIT_SECONDS": "60"}
    proc = start_one_job(env)
    try:
        wait_for(lambda: " waiting " in _worker_line(env, "w-live"), timeout=30,
                 what="the worker shown waiting")
        job = queue.enqueue(prompt="work", repo_url=git_repo, config={
            **fake(stdout=[_assistant(1), _assistant(2)], sleep=60), "agent": "claude"})
        line = wait_for(lambda: (l := _worker_line(env, "w-live")) and "turn 2" in l and l,
                        timeout=30, what="the worker shown running with progress")
        assert " running " in line and str(job["id"]) in line
        assert "34.5k tokens" in line  # two messages of 17,242 tokens
        header = runner(env, "workers").stdout.splitlines()[0]
        assert "RUNNING_FOR" in header and "PROGRESS" in header
        queue.request_cancel(job["id"])
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_watch_shows_a_running_jobs_progress(fake_claude, queue, git_repo, tmp_path, db_url):
    job = queue.enqueue(prompt="work", repo_url=git_repo, config={
        **fake(sleep=1, then_stdout=[_assistant(1)], then_sleep=60), "agent": "claude"})
    worker = start_one_job(fake_claude)
    watch = subprocess.Popen([sys.executable, "-m", "runner", "jobs", "--watch"],
                             env=cli_env(tmp_path, DATABASE_URL=db_url), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines: stdqueue.Queue[str] = stdqueue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in watch.stdout], daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=30)
            if str(job["id"]) in line and "turn 1" in line and "17.2k tokens" in line:
                break
        queue.request_cancel(job["id"])
        worker.communicate(timeout=30)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=10) == 0
    finally:
        for p in (watch, worker):
            if p.poll() is None:
                p.kill()
                p.communicate()
