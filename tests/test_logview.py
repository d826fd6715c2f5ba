"""`runner logs`: finding a job's log (prefix, links, .gz), rendering, and -f on a real
growing file while the job finishes in a real database."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_health import cli_env, runner_cli

CLAUDE = REPO / "tests" / "fixtures" / "claude"
JOB = "0b2f3c4d-1111-2222-3333-444455556666"
OTHER = "0b2f9999-1111-2222-3333-444455556666"


def runner_line(event: str, **kv) -> str:
    return json.dumps({"timestamp": "2026-03-04T05:06:07.000001Z", "level": "info", "event": event,
                       "worker_id": "w", **kv})


def make_log(logs: Path, job_id: str, text: str, name: str = "20260304T050607Z-1.log",
             gz: bool = False) -> Path:
    (logs / "runs").mkdir(parents=True, exist_ok=True)
    (logs / "jobs").mkdir(parents=True, exist_ok=True)
    run = logs / "runs" / (name + (".gz" if gz else ""))
    if gz:
        with gzip.open(run, "wt") as fh:
            fh.write(text)
    else:
        run.write_text(text)
    link = logs / "jobs" / f"{job_id}.log"
    if os.path.lexists(link):
        link.unlink()
    link.symlink_to(os.path.relpath(run, link.parent))
    return run


def capture(case: str) -> str:
    return (CLAUDE / f"{case}.stdout.jsonl").read_text()


def test_whole_log_rendered_by_prefix(tmp_path):
    text = runner_line("job_claimed", attempt=1) + "\n" + capture("success_write_tool") \
        + "[agent stderr] a warning\n" + runner_line("job_outcome", verdict="succeeded") + "\n"
    make_log(tmp_path / "logs", JOB, text)
    proc = runner_cli(cli_env(tmp_path), "logs", "0B2F3C")  # no DATABASE_URL needed
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert "info    job_claimed attempt=1" in out[0]
    assert "          claude  tool Write /tmp/capture/repo/hello.txt" in out
    assert "          [agent stderr] a warning" in out
    assert "job_outcome verdict=succeeded" in out[-1]
    raw = runner_cli(cli_env(tmp_path), "logs", JOB, "--raw")
    assert raw.stdout == text


def test_ambiguous_unknown_and_malformed_ids(tmp_path):
    make_log(tmp_path / "logs", JOB, "x\n", name="a.log")
    make_log(tmp_path / "logs", OTHER, "y\n", name="b.log")
    env = cli_env(tmp_path)
    proc = runner_cli(env, "logs", "0b2f")
    assert proc.returncode == 1 and "matches 2 jobs" in proc.stderr
    assert runner_cli(env, "logs", "0b2f9").stdout == "y\n"
    proc = runner_cli(env, "logs", "abc")
    assert proc.returncode == 1 and "no job log matches 'abc'" in proc.stderr
    proc = runner_cli(env, "logs", "../../etc/passwd")
    assert proc.returncode == 1 and "not a job id" in proc.stderr


@pytest.mark.parametrize("layout", ["link_to_gz", "gz_without_relink", "gz_link_name"])
def test_compressed_logs_are_read(tmp_path, layout):
    logs = tmp_path / "logs"
    text = capture("auth_401")
    if layout == "link_to_gz":
        make_log(logs, JOB, text, gz=True)
    elif layout == "gz_without_relink":  # the link still names the .log; only the .gz is left
        run = make_log(logs, JOB, "", name="r.log")
        with gzip.open(run.with_name("r.log.gz"), "wt") as fh:
            fh.write(text)
        run.unlink()
    else:  # the supervisor renamed the link too
        make_log(logs, JOB, text, gz=True)
        link = logs / "jobs" / f"{JOB}.log"
        link.rename(link.with_name(f"{JOB}.log.gz"))
    proc = runner_cli(cli_env(tmp_path), "logs", JOB[:8])
    assert proc.returncode == 0, proc.stderr
    assert "api_retry attempt 1/2 status=401 error=authentication_failed" in proc.stdout
    assert "result success is_error=true api_error_status=401" in proc.stdout


def test_a_job_without_log_says_its_status(tmp_path, db_url, queue):
    job = queue.enqueue(prompt="p")
    proc = runner_cli(cli_env(tmp_path, DATABASE_URL=db_url), "logs", str(job["id"])[:13])
    assert proc.returncode == 1
    assert f"job {job['id']} has no log" in proc.stderr and "status is queued" in proc.stderr


def test_follow_prints_lines_as_they_come_and_stops_when_the_job_finishes(tmp_path, db_url, queue):
    queue.enqueue(prompt="p")
    claim = queue.claim(["default"], 60)
    job_id = str(claim.id)
    lines = capture("success_write_tool").splitlines(keepends=True)
    run = make_log(tmp_path / "logs", job_id, runner_line("job_claimed", attempt=1) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "logs", "-f", job_id[:8]],
                            env=cli_env(tmp_path, DATABASE_URL=db_url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert "job_claimed attempt=1" in proc.stdout.readline()
        with open(run, "a") as fh:
            fh.write(lines[0])
            fh.write(lines[1][:40])  # half a line: nothing until its end arrives
            fh.flush()
            assert "claude  init model=claude-sonnet-4-5" in proc.stdout.readline()
            time.sleep(0.5)
            fh.write(lines[1][40:])
            fh.flush()
            assert "claude  tool Write /tmp/capture/repo/hello.txt" in proc.stdout.readline()
            time.sleep(1.5)
            assert proc.poll() is None  # still running: the job has not finished
            fh.writelines(lines[2:])
            fh.write(runner_line("job_outcome", verdict="succeeded") + "\n")
        queue.finish(claim, "succeeded", result={})
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "claude  result success is_error=false" in out
    assert out.rstrip().endswith("job_outcome verdict=succeeded")


def test_follow_waits_for_the_log_and_moves_with_a_retried_job(tmp_path, db_url, queue):
    queue.enqueue(prompt="p")
    claim = queue.claim(["default"], 60)
    job_id = str(claim.id)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "logs", "-f", job_id],
                            env=cli_env(tmp_path, DATABASE_URL=db_url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        time.sleep(1.5)  # no log yet: it waits
        make_log(tmp_path / "logs", job_id, runner_line("first_run") + "\n", name="1.log")
        assert "first_run" in proc.stdout.readline()
        make_log(tmp_path / "logs", job_id, runner_line("second_run") + "\n", name="2.log")
        assert "second_run" in proc.stdout.readline()
        queue.finish(claim, "failed", error="x")
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "runs again" in err


def test_follow_ends_on_ctrl_c(tmp_path):
    make_log(tmp_path / "logs", JOB, "hello\n")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "logs", "-f", JOB],
                            env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    assert proc.stdout.readline() == "hello\n"
    proc.send_signal(subprocess.signal.SIGINT)
    assert proc.wait(timeout=10) == 0
