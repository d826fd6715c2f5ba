"""A full log disk costs no job an attempt: the iteration logs to stderr instead of
crashing after its claim, the jobs run and are recorded, and the cause is in the state dir
(``last_error``: "log directory full")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.state import read_last_error
from tests.conftest import REPO, fake


@pytest.fixture
def full_log_disk(tmp_path: Path):
    mnt = tmp_path / "full-logs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        (mnt / "runs").mkdir()
        (mnt / "jobs").mkdir()
        run_log = mnt / "runs" / "supervisor.log"
        run_log.touch()
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # fill every block
            while os.write(fd, b"\1" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield mnt, run_log
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("how", ["supervised", "own_log"])
def test_jobs_run_and_keep_their_attempts_on_a_full_log_disk(how, full_log_disk, queue,
                                                             runner_env, tmp_path):
    mnt, run_log = full_log_disk
    env = {**runner_env, "RUNNER_LOG_DIR": str(mnt)}
    jobs = [queue.enqueue(prompt="p", config=fake(stdout=["x" * 2000] * 20)) for _ in range(3)]
    for _ in jobs:
        if how == "supervised":  # bin/run-agent.sh: stdout *is* the run log on that disk
            env["RUNNER_RUN_LOG"] = str(run_log)
            with open(run_log, "a") as out:
                proc = subprocess.run([sys.executable, "-m", "runner.one_job"], env=env,
                                      stdout=out, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                      timeout=120, stdin=subprocess.DEVNULL)
        else:
            proc = subprocess.run([sys.executable, "-m", "runner.one_job"], env=env,
                                  capture_output=True, text=True, cwd=REPO, timeout=120,
                                  stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "log directory full" in proc.stderr
    for job in jobs:
        row = queue.get(job["id"])
        assert row["status"] == "succeeded" and row["attempts"] == 1, row
    assert "log directory full" in (read_last_error(Path(env["RUNNER_STATE_DIR"])) or "")
    assert os.path.ismount(mnt)
