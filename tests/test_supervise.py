"""The supervisor's decisions (runner/supervise.py), in-process: what each exit code leads
to, the markers and state.json — the shell's side is tested as a real process in tests/bin."""

from __future__ import annotations

import json
import time

import pytest

from runner import retry
from runner.contract import STATE_FIELDS, StateFile
from runner.errors import SettingsError
from runner.supervise import Supervisor, secs
from runner.supervise_settings import load_supervisor_settings


@pytest.fixture
def sup(tmp_path, monkeypatch):
    for name in ("BACKOFF_START", "BACKOFF_MAX", "MAX_CONSECUTIVE_FAILURES", "TOKEN_CHECK_SECONDS",
                 "ITERATION_COMMAND", "WORKER_ID"):
        monkeypatch.delenv(f"RUNNER_{name}", raising=False)
    monkeypatch.setenv("RUNNER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("RUNNER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RUNNER_CREDENTIAL_FILES", str(tmp_path / "cred.json"))
    monkeypatch.setenv("RUNNER_ITERATION_COMMAND", "true --flag")
    monkeypatch.setenv("RUNNER_BACKOFF_START", "2")
    monkeypatch.setenv("RUNNER_BACKOFF_MAX", "10")
    monkeypatch.setenv("RUNNER_MAX_CONSECUTIVE_FAILURES", "3")
    s = Supervisor(load_supervisor_settings(), pid=4242)
    s.start()
    return s


def state(s: Supervisor) -> dict:
    return json.loads(s.file(StateFile.STATE).read_text())


def test_start_tells_the_shell_the_environment_and_the_command(sup):
    sup2 = Supervisor(sup.s, pid=7)
    greeting = sup2.start()
    assert greeting[-1] == "ready"
    assert "arg true" in greeting and "arg --flag" in greeting
    assert f"env RUNNER_STATE_DIR {sup.state_dir}" in greeting
    assert any(line.startswith("env RUNNER_WORKER_ID ") and line.endswith("-7") for line in greeting)


def test_each_iteration_gets_a_fresh_run_log_and_state_says_running(sup):
    first = sup.handle("begin")
    assert first.startswith("run ") and first.endswith("-1.log")
    assert sup.handle("exited 0").startswith("run ")
    second = sup.handle("exited 0")
    assert second != first
    st = state(sup)
    assert set(st) == set(STATE_FIELDS) and st["status"] == "running" and st["iteration"] == 3


def test_failures_back_off_doubling_to_the_cap_then_unhealthy_until_a_success(sup):
    sup.handle("begin")
    waits = []
    for _ in range(4):
        reply = sup.handle("exited 1")
        assert reply.startswith("wait ")
        waits.append(float(reply.split()[1]))
        assert sup.handle("woke").startswith("run ")
    assert waits == [2, 4, 10, 10]  # the third failure is unhealthy: the longest backoff
    assert "3 iterations in a row failed" not in sup.file(StateFile.UNHEALTHY).read_text()
    assert "4 iterations in a row failed" in sup.file(StateFile.UNHEALTHY).read_text()
    assert state(sup)["consecutive_failures"] == 4
    sup.handle("exited 0")
    assert not sup.file(StateFile.UNHEALTHY).exists()
    assert state(sup)["consecutive_failures"] == 0


def test_token_expired_waits_until_the_credential_changes(sup, tmp_path):
    sup.handle("begin")
    assert sup.handle("exited 3") == f"wait {sup.s.token_check_seconds}"
    marker = sup.file(StateFile.TOKEN_EXPIRED).read_text()
    assert "No jobs are claimed until the credential changes" in marker
    assert str(tmp_path / "cred.json") in marker
    assert sup.handle("woke").startswith("wait ")  # unchanged: keep waiting
    (tmp_path / "cred.json").write_text('{"new": true}')
    assert sup.handle("woke").startswith("run ")
    assert not sup.file(StateFile.TOKEN_EXPIRED).exists()


@pytest.mark.parametrize("content, lo, hi", [
    (None, 10, 10),  # no reset time: RUNNER_BACKOFF_MAX
    ("garbage", 10, 10),
    ("{future}", 590, 600),
    ("1", 2, 2),  # in the past: go on after RUNNER_BACKOFF_START
])
def test_usage_limit_sleeps_until_the_reset(sup, content, lo, hi):
    sup.handle("begin")
    if content is not None:
        text = content.replace("{future}", str(int(time.time()) + 600))
        sup.file(StateFile.USAGE_LIMIT_RESET).write_text(text + "\n")
    wait = float(sup.handle("exited 4").split()[1])
    assert lo <= wait <= hi
    assert state(sup)["status"] == "usage_limited"
    assert sup.handle("woke").startswith("run ")


def test_a_stop_ends_the_loop_with_the_signal_s_code(sup):
    sup.handle("begin")
    sup.handle("child 99")
    assert sup.handle("stopping INT") == "ok"
    assert state(sup)["status"] == "stopping"
    assert sup.handle("exited 143") == "exit 130"
    st = state(sup)
    assert st["status"] == "stopped" and st["last_exit_code"] == 143


def test_a_current_job_left_behind_is_removed_after_the_iteration(sup):
    sup.handle("begin")
    sup.file(StateFile.CURRENT_JOB).write_text("abc\n")
    sup.write_state()
    assert state(sup)["current_job"] == "abc"
    sup.handle("exited 1")
    assert not sup.file(StateFile.CURRENT_JOB).exists()


@pytest.mark.parametrize("value, text", [(5, "5s"), (0.05, "0.05s"), (1.5, "1.5s"), (300.0, "300s")])
def test_durations_read_as_before(value, text):
    assert secs(value) == text


def test_backoff_doubles_to_its_cap():
    assert [retry.backoff(5, 60, n) for n in range(0, 7)] == [0, 5, 10, 20, 40, 60, 60]
    assert retry.backoff(1, 3600, 10_000) == 3600  # no overflow


@pytest.mark.parametrize("name, value, expected", [
    ("RUNNER_BACKOFF_START", "5m", "a number of seconds greater than 0"),
    ("RUNNER_BACKOFF_MAX", "inf", "a number of seconds greater than 0"),
    ("RUNNER_BACKOFF_START", "20", "at most RUNNER_BACKOFF_MAX"),
    ("RUNNER_MAX_CONSECUTIVE_FAILURES", "0", "a whole number of at least 1"),
    ("RUNNER_ITERATION_COMMAND", "/nope/python -m x", "an executable"),
])
def test_a_bad_setting_is_one_sentence_naming_it(sup, monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_supervisor_settings()
    message = str(err.value)
    assert message.startswith(f"bad setting {name}='{value}': expected ") and expected in message


def test_empty_means_the_default(sup, monkeypatch):
    monkeypatch.setenv("RUNNER_BACKOFF_MAX", "")
    monkeypatch.setenv("RUNNER_BACKOFF_START", "")
    s = load_supervisor_settings()
    assert (s.backoff_start, s.backoff_max) == (5, 300)
