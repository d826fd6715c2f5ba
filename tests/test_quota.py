"""The quota gate with real probe scripts, in-process and in a real iteration."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runner import quota
from runner.errors import SettingsError
from runner.settings import load_settings
from tests.conftest import fake, run_one_job, start_one_job


def probe_script(tmp_path: Path, body: str, name: str = "probe.py") -> str:
    path = tmp_path / name
    path.write_text(f"import json, os, sys, time\n{body}\n")
    return f"{sys.executable} {path}"


def settings(probe: str | None, **more):
    return load_settings(database_url="postgresql://unused/x", quota_probe=probe, **more)


@pytest.mark.parametrize("output,pct,reset", [
    ('{"pct": 42.5, "reset_at": "2030-01-02T03:04:05Z"}', 42.5, datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ('{"pct": 0, "reset_at": 1893456000}', 0.0, datetime(2030, 1, 1, tzinfo=timezone.utc)),
    ('{"pct": 100, "reset_at": 1893456000000}', 100.0, datetime(2030, 1, 1, tzinfo=timezone.utc)),
    ('{"pct": 7}', 7.0, None),
])
def test_probe_answers_are_read(tmp_path, output, pct, reset):
    q = quota.probe(probe_script(tmp_path, f"print({output!r})"), timeout=10)
    assert q == quota.Quota(pct, reset)


@pytest.mark.parametrize("body,message", [
    ("sys.exit(2)", "exited 2"),
    ("print('nope', file=sys.stderr); sys.exit(1)", "exited 1: nope"),
    ("print('garbage')", "not JSON"),
    ("print('[1]')", "not a JSON object"),
    ("print(json.dumps({'pct': 'lots'}))", '"pct" must be a number'),
    ("print(json.dumps({'pct': 140}))", '"pct" must be a number'),
    ("print(json.dumps({'pct': 5, 'reset_at': 'soon'}))", '"reset_at" must be'),
    ("time.sleep(5)", "did not answer within 0.5 s"),
])
def test_bad_probes_raise_a_clear_error(tmp_path, body, message):
    with pytest.raises(quota.ProbeError, match=message.replace("(", r"\(")):
        quota.probe(probe_script(tmp_path, body), timeout=0.5)


def test_missing_probe_binary_and_unsplittable_command():
    with pytest.raises(quota.ProbeError, match="was not found"):
        quota.probe("/no/such/probe --json", timeout=1)
    with pytest.raises(quota.ProbeError, match="cannot be split"):
        quota.probe('probe "unclosed', timeout=1)


def test_the_probe_does_not_get_the_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret@db/x")
    monkeypatch.setenv("RUNNER_GIT_TOKEN", "ghp_secret")
    monkeypatch.setenv("PROBE_VISIBLE", "yes")
    dump = tmp_path / "env.json"
    quota.probe(probe_script(tmp_path, f"json.dump(dict(os.environ), open({str(dump)!r}, 'w'));"
                                       "print(json.dumps({'pct': 50}))"), timeout=10)
    env = json.loads(dump.read_text())
    assert "DATABASE_URL" not in env and "RUNNER_GIT_TOKEN" not in env
    assert env["PROBE_VISIBLE"] == "yes"


def test_switch_words_are_off_or_rejected():
    assert settings("false").quota_probe is None
    assert settings("").quota_probe is None
    with pytest.raises(SettingsError, match="RUNNER_QUOTA_PROBE: .*a command"):
        settings("true")


def test_gate_passes_when_enough_is_left_or_the_probe_fails(tmp_path):
    stop = threading.Event()
    assert quota.gate(settings(None), stop) is True
    with capture_logs() as logs:
        assert quota.gate(settings(probe_script(tmp_path, "print(json.dumps({'pct': 50}))")), stop)
        assert quota.gate(settings(probe_script(tmp_path, "print('garbage')")), stop)
    assert logs[0]["event"] == "quota_ok"
    assert logs[1]["event"] == "quota_probe_failed"
    assert logs[1]["error"].startswith("quota probe failed, ignored: its output is not JSON")


def test_gate_waits_until_reset_capped_and_stops_on_sigterm(tmp_path):
    stop = threading.Event()
    soon = (datetime.now(timezone.utc) + timedelta(seconds=1.5)).isoformat()
    low_soon = probe_script(tmp_path, f"print(json.dumps({{'pct': 3, 'reset_at': {soon!r}}}))", "a.py")
    started = time.monotonic()
    with capture_logs() as logs:
        assert quota.gate(settings(low_soon, min_quota_pct=10), stop) is True
    assert 1.0 <= time.monotonic() - started < 10
    assert logs[0]["event"] == "quota_low_waiting" and logs[0]["pct"] == 3

    far = (datetime.now(timezone.utc) + timedelta(hours=3)).isoformat()
    low_far = probe_script(tmp_path, f"print(json.dumps({{'pct': 3, 'reset_at': {far!r}}}))", "b.py")
    started = time.monotonic()
    assert quota.gate(settings(low_far, quota_max_wait_seconds=1), stop) is True  # the cap
    assert time.monotonic() - started < 10

    past = probe_script(tmp_path, "print(json.dumps({'pct': 3, 'reset_at': time.time() - 5}))", "c.py")
    started = time.monotonic()
    assert quota.gate(settings(past), stop) is True  # the quota has just come back
    assert time.monotonic() - started < 10

    no_reset = probe_script(tmp_path, "print(json.dumps({'pct': 3}))", "d.py")
    started = time.monotonic()
    assert quota.gate(settings(no_reset, quota_max_wait_seconds=1), stop) is True
    assert time.monotonic() - started >= 0.9

    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    assert quota.gate(settings(low_far), stop) is False  # a 3 h wait, ended by "SIGTERM"
    assert time.monotonic() - started < 10


def test_an_iteration_waits_for_quota_before_claiming(runner_env, queue, tmp_path):
    soon = (datetime.now(timezone.utc) + timedelta(seconds=2)).timestamp()
    probe = probe_script(tmp_path, f"print(json.dumps({{'pct': 1.5, 'reset_at': {soon}}}))")
    job = queue.enqueue(prompt="p", config=fake())
    proc = run_one_job(runner_env, RUNNER_QUOTA_PROBE=probe)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"event": "quota_low_waiting"' in proc.stdout
    assert proc.stdout.index("quota_low_waiting") < proc.stdout.index("job_claimed")
    assert queue.get(job["id"])["status"] == "succeeded"


def test_sigterm_during_the_quota_wait_claims_nothing(runner_env, queue, tmp_path):
    probe = probe_script(tmp_path, "print(json.dumps({'pct': 0, 'reset_at': time.time() + 3600}))")
    job = queue.enqueue(prompt="p", config=fake())
    proc = start_one_job(runner_env, RUNNER_QUOTA_PROBE=probe)
    try:
        for line in proc.stdout:
            if "quota_low_waiting" in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert queue.get(job["id"])["status"] == "queued"
    assert [w["state"] for w in queue.workers()] == ["quota_wait"]
