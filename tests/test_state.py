"""The files the iteration shares with the supervisor (runner/state.py)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from runner import state
from runner.contract import StateFile


def test_current_job_and_usage_reset_are_what_the_supervisor_reads(tmp_path):
    state.set_current_job(tmp_path, "0c5f")
    assert (tmp_path / StateFile.CURRENT_JOB).read_text() == "0c5f\n"
    state.clear_current_job(tmp_path)
    assert not (tmp_path / StateFile.CURRENT_JOB).exists()
    state.clear_current_job(tmp_path)  # twice is fine
    reset = datetime(2026, 12, 2, 20, 0, tzinfo=timezone.utc)
    state.set_usage_limit_reset(tmp_path, reset)
    assert int((tmp_path / StateFile.USAGE_LIMIT_RESET).read_text()) == int(reset.timestamp())


def test_last_error_is_one_redacted_line(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_GIT_TOKEN", "ghp_canarycanarycanarycanary1234")
    state.set_last_error(tmp_path, "push failed:\n token ghp_canarycanarycanarycanary1234 refused")
    text = state.read_last_error(tmp_path)
    assert "\n" not in text and "push failed: token" in text
    assert "canary" not in text


def test_last_error_never_raises_on_a_full_or_missing_disk(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    state.set_last_error(blocked / "sub", "disk full")  # a file where the dir should be
    assert state.read_last_error(blocked / "sub") is None


def test_iterations_are_kept_small(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "_ITERATIONS_MAX_BYTES", 2000)
    for i in range(100):
        state.record_iteration(tmp_path, i / 10, 0, f"job-{i}")
    rows = state.read_iterations(tmp_path)
    assert os.path.getsize(tmp_path / StateFile.ITERATIONS) <= 2000 + 200
    assert rows[-1]["job_id"] == "job-99" and rows[0]["job_id"] != "job-0"
    (tmp_path / StateFile.ITERATIONS).write_text("not json\n" + json.dumps({"seconds": 1}) + "\n")
    assert state.read_iterations(tmp_path) == [{"seconds": 1}]


def test_each_worker_has_its_own_agent_record(tmp_path):
    state.set_agent(tmp_path, "host-1", "job-a", 111)
    state.set_agent(tmp_path, "host/2", "job-b", 222)
    assert state.read_agent(tmp_path, "host-1") == ("job-a", 111, os.getpid())
    assert state.read_agent(tmp_path, "host/2")[:2] == ("job-b", 222)
    state.clear_agent(tmp_path, "host-1")
    assert state.read_agent(tmp_path, "host-1") is None
    assert state.read_agent(tmp_path, "host/2") is not None


def _supervisor_state(state_dir, status, pid):
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / StateFile.STATE).write_text(json.dumps({"status": status, "supervisor_pid": pid}))


def test_the_iteration_sees_its_own_supervisor_stopping_and_nothing_else(tmp_path):
    assert not state.supervisor_stopping(tmp_path)  # no file: a run by hand
    _supervisor_state(tmp_path, "stopping", os.getppid())
    assert state.supervisor_stopping(tmp_path)
    _supervisor_state(tmp_path, "running", os.getppid())
    assert not state.supervisor_stopping(tmp_path)
    # A supervisor that died mid-stop left the file: it stops no later iteration.
    _supervisor_state(tmp_path, "stopping", os.getppid() + 100000)
    assert not state.supervisor_stopping(tmp_path)
    (tmp_path / StateFile.STATE).write_text("{half a rec")
    assert not state.supervisor_stopping(tmp_path)
