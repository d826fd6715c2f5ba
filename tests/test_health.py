"""`runner health` (files only) and `runner health --serve` (/health, /metrics) for real:
a real state directory, a real HTTP server on a free loopback port, a real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from runner import health, healthserver, metrics, state
from runner.settings import load_settings
from tests.conftest import REPO


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_state(state_dir: Path, age_seconds: float = 0, **fields) -> dict:
    body = {"status": "running", "supervisor_pid": 7, "worker_id": "host-7", "iteration": 12,
            "iteration_started_at": iso(datetime.now(timezone.utc)), "last_exit_code": 0,
            "consecutive_failures": 2, "current_job": None, "run_log": "/x.log",
            "backoff_until": None, "usage_limit_reset_at": None,
            "updated_at": iso(datetime.now(timezone.utc) - timedelta(seconds=age_seconds)), **fields}
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text(json.dumps(body))
    return body


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_") and k != "DATABASE_URL"}
    env.update({"PYTHONPATH": str(REPO), "RUNNER_STATE_DIR": str(tmp_path / "state"),
                "RUNNER_LOG_DIR": str(tmp_path / "logs")}, **extra)
    return env


def runner_cli(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)


# -- the report ------------------------------------------------------------------------


def test_fresh_state_is_healthy_and_keeps_its_fields(tmp_path):
    written = write_state(tmp_path, age_seconds=5)
    rep = health.report(tmp_path, stale_seconds=120)
    assert rep["healthy"] is True and rep["reasons"] == [] and rep["stale"] is False
    assert rep["markers"] == {}
    assert 4 <= rep["state_age_seconds"] <= 30
    for key, value in written.items():
        assert rep[key] == value


@pytest.mark.parametrize("setup,reason", [
    (lambda d: None, "is missing"),
    (lambda d: (d / "state.json").write_text("{not json"), "cannot be read"),
    (lambda d: (d / "state.json").write_text("[1, 2]"), "does not hold a JSON object"),
    (lambda d: write_state(d, updated_at="yesterday"), "no readable updated_at"),
    (lambda d: write_state(d, age_seconds=300), "s ago (more than 120 s)"),
    (lambda d: (write_state(d), (d / "UNHEALTHY").write_text("5 failed iterations in a row\n")),
     "UNHEALTHY: 5 failed iterations in a row"),
    (lambda d: (write_state(d), (d / "TOKEN_EXPIRED").write_text("")), "TOKEN_EXPIRED"),
])
def test_unhealthy_cases_say_why(tmp_path, setup, reason):
    tmp_path.mkdir(exist_ok=True)
    setup(tmp_path)
    rep = health.report(tmp_path, stale_seconds=120)
    assert rep["healthy"] is False
    assert any(reason in r for r in rep["reasons"]), rep["reasons"]


def test_markers_are_reported_with_their_text(tmp_path):
    write_state(tmp_path)
    (tmp_path / "TOKEN_EXPIRED").write_text("401 from the API at 02:13\n")
    assert health.report(tmp_path, 120)["markers"] == {"TOKEN_EXPIRED": "401 from the API at 02:13"}


def test_cli_health_works_without_database_url_and_exits_by_health(tmp_path):
    env = cli_env(tmp_path)
    proc = runner_cli(env, "health")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["healthy"] is False
    write_state(tmp_path / "state")
    proc = runner_cli(env, "health")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["status"] == "running"
    # The staleness limit is a setting.
    write_state(tmp_path / "state", age_seconds=30)
    assert runner_cli({**env, "RUNNER_HEALTH_STALE_SECONDS": "10"}, "health").returncode == 1


# -- exposition format -------------------------------------------------------------------

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
                    r'(-?[0-9.e+-]+|NaN|\+Inf|-Inf)$')


def check_exposition(text: str) -> dict[str, str]:
    """Every sample is well-formed and preceded by its family's HELP and TYPE, once each."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, f"two HELP lines for {name}"
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name in helped and name not in types
            assert kind in ("gauge", "counter", "histogram", "summary", "untyped")
            types[name] = kind
        else:
            assert SAMPLE.match(line), f"bad sample line: {line!r}"
            name = re.split(r"[{ ]", line, 1)[0]
            assert name in types, f"{name} has no TYPE before it"
    return types


def test_label_values_and_help_are_escaped():
    exp = metrics.Exposition()
    exp.family("x_total", "counter", "help with \\ and\nnewline", [({"a": 'q"b\\c\nd'}, 3)])
    text = exp.text()
    assert '# HELP x_total help with \\\\ and\\nnewline' in text
    assert 'x_total{a="q\\"b\\\\c\\nd"} 3' in text
    check_exposition(text)


def test_stats_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    got = dict((labels["stat"], v) for labels, v in metrics.stats(values))
    assert got == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0, "mean": 50.5}
    assert metrics.stats([]) == []


# -- the server ---------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """Start `make_server` on a free loopback port with these settings; yield a GET helper."""
    servers = []

    def start(**env: str):
        for key in [k for k in os.environ if k.startswith("RUNNER_") or k == "DATABASE_URL"]:
            monkeypatch.delenv(key)
        for key, value in {"RUNNER_STATE_DIR": str(tmp_path / "state"), "RUNNER_HEALTH_BIND": "127.0.0.1",
                           **env}.items():
            monkeypatch.setenv(key, value)
        server = healthserver.make_server(load_settings(database_optional=True), port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        base = f"http://127.0.0.1:{server.server_address[1]}"

        def get(path: str) -> tuple[int, str, str]:
            try:
                with urllib.request.urlopen(base + path, timeout=10) as resp:
                    return resp.status, resp.headers["Content-Type"], resp.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.headers["Content-Type"], err.read().decode()
        return get

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_http_health_is_200_or_503_and_other_paths_404(serve, tmp_path):
    get = serve()
    code, ctype, body = get("/health")
    assert code == 503 and ctype == "application/json" and json.loads(body)["healthy"] is False
    write_state(tmp_path / "state")
    code, _, body = get("/health")
    assert code == 200 and json.loads(body)["worker_id"] == "host-7"
    assert get("/nope")[0] == 404
    assert get("/health/../metrics")[0] == 404


def test_metrics_with_a_real_database(serve, tmp_path, db_url, queue):
    write_state(tmp_path / "state", worker_id="test-worker", status="backoff", consecutive_failures=3)
    state.record_iteration(tmp_path / "state", 2.5, 0, "j1")
    state.record_iteration(tmp_path / "state", 7.5, 1)
    queue.enqueue(prompt="a", queue="default")
    queue.enqueue(prompt="b", queue="other")
    claimed = queue.claim(["default"], 60)  # as worker "test-worker"
    queue.finish(claimed, "succeeded", result={})
    queue.pause("other", None, "deploy")

    code, ctype, text = serve(DATABASE_URL=db_url)("/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    types = check_exposition(text)
    assert types["runner_worker_job_events_total"] == "counter"
    for line in [
        "runner_up 1", "runner_healthy 1", "runner_database_up 1",
        'runner_state{status="backoff"} 1', 'runner_state{status="running"} 0',
        'runner_state{status="unknown"} 0', "runner_consecutive_failures 3",
        'runner_marker{marker="UNHEALTHY"} 0',
        'runner_jobs{queue="default",status="succeeded"} 1', 'runner_jobs{queue="default",status="queued"} 0',
        'runner_jobs{queue="other",status="queued"} 1',
        'runner_worker_job_events_total{worker_id="test-worker",event="claimed"} 1',
        'runner_worker_job_events_total{worker_id="test-worker",event="succeeded"} 1',
        'runner_iteration_duration_seconds{stat="max"} 7.5',
        'runner_iterations_recent{exit_code="1"} 1',
        "runner_claim_latency_jobs 1",
        'runner_queue_paused{queue="other",agent=""} 1',
    ]:
        assert line + "\n" in text, f"{line!r} missing from\n{text}"
    assert re.search(r'^runner_claim_latency_seconds\{stat="p50"\} [0-9.e-]+$', text, re.M)


def test_metrics_say_when_the_database_is_down(serve, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "UNHEALTHY").write_text("db down")
    code, _, text = serve(DATABASE_URL=f"postgresql://x@127.0.0.1:{port}/x")("/metrics")
    assert code == 200
    check_exposition(text)
    assert "runner_database_up 0\n" in text
    assert "runner_up 0\n" in text and "runner_healthy 0\n" in text
    assert 'runner_state{status="unknown"} 1\n' in text
    assert 'runner_marker{marker="UNHEALTHY"} 1\n' in text
    assert "runner_jobs" not in text


def test_serve_command_answers_and_stops_on_sigterm(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env(tmp_path, RUNNER_HEALTH_PORT=str(port), RUNNER_HEALTH_BIND="127.0.0.1")
    write_state(tmp_path / "state")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "health", "--serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        assert "serving http://127.0.0.1" in proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert "runner_database_up 0" in resp.read().decode()  # no DATABASE_URL at all
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
