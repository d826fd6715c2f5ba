"""The image, built from docker/Dockerfile (unchanged) and run with the project's own compose
files, against this machine's PostgreSQL — the deployment path, for real.

The engine, the base image and the compose program come from tests/docker/engine.py: an
engine the environment points at, else Debian's docker.io started as a private daemon; the
base image pulled, else a STAND-IN made with debootstrap (Debian's Python 3.11.2 in
/usr/bin, not the official image's /usr/local build — sizes and paths differ a little).
The containers use host networking (docker-compose.host.yml): there is no bridge network
on these machines, and the database and the fake Anthropic API listen on the host's
loopback.

One scenario in order, each step its own test: build (size budget), start on an EMPTY
database (the entrypoint migrates; the HEALTHCHECK turns healthy), processes and
capabilities, a stub job and a job of the real Claude Code CLI (against
tests/fakes/anthropic_api.py on the host), `docker stop` while the CLI streams (exit
before the grace period, job back to queued with its attempt refunded, nothing left, a
restarted container completes it), and three replicas sharing the queue.

Runs with ``-m container`` only (bin/test does, on its own time budget): the first build
takes minutes. Set RUNNER_CONTAINER_TEST=1 to run it with another marker expression.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.docker import engine as engines
from tests.fakes.anthropic_api import FakeAnthropic, slow_text, text

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.host.yml"]
SIZE_BUDGET_MB = 700
GRACE_S = 60  # docker-compose.yml's stop_grace_period for the runner
RUNNER_UID, AGENT_UID = 1000, 1001
# Capabilities the design gives the runner (to start, signal and clean up after the
# agent's uid); the agent gets none. Bit numbers from linux/capability.h.
CAPS = {0: "chown", 1: "dac_override", 3: "fowner", 5: "kill", 6: "setgid", 7: "setuid"}
RUNNER_CAPS = {"chown", "kill", "setgid", "setuid"}
API_KEY = "sk-ant-api03-fake-key-for-the-container-test"

pytestmark = pytest.mark.container


def _selected(config: pytest.Config) -> bool:
    return "container" in (config.getoption("-m") or "") or os.environ.get("RUNNER_CONTAINER_TEST") == "1"


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal as the run goes (build time, image size, stand-in note)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(f"[container] {line}", file=sys.stderr)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[container] {line}")


def wait_until(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------------ the stack


class Stack:
    """One compose project: env file, data folders, database, engine."""

    def __init__(self, engine: engines.Engine, compose: list[str], work: Path, admin_dsn: str,
                 api: FakeAnthropic) -> None:
        self.engine, self.compose_cmd, self.work, self.api = engine, compose, work, api
        self.project = f"rct{os.getpid()}"
        self.data = work / "data"
        self.dbname = self.role = f"rct_{uuid.uuid4().hex[:10]}"
        self.password = password = uuid.uuid4().hex
        self.admin_dsn = admin_dsn
        host_dsn = psycopg.conninfo.conninfo_to_dict(admin_dsn)
        self.port = int(host_dsn.get("port") or 5432)
        self.url = f"postgresql://{self.role}:{password}@127.0.0.1:{self.port}/{self.dbname}"
        self.env_file = work / "test.env"
        self.env_file.write_text("\n".join([
            f"COMPOSE_PROJECT_NAME={self.project}",
            "RUNNER_IMAGE_TAG=container-test",
            f"RUNNER_DATA={self.data}",
            f"RUNNER_ENV_FILE={work / 'test.env'}",
            "POSTGRES_PASSWORD=unused-the-host-database-is-used",
            f"DATABASE_URL={self.url}",
            "RUNNER_ALLOWED_AGENTS=stub,command,claude",
            "RUNNER_DEFAULT_AGENT=stub",
            # Loops while the marker file exists: a job that runs until the test lets it end.
            "RUNNER_AGENT_COMMAND=bash -c 'while [ -e /data/jobs/HOLD ]; do sleep 0.5; done'",
            f"ANTHROPIC_BASE_URL={api.base_url}",
            f"ANTHROPIC_API_KEY={API_KEY}",
            "CLAUDE_CODE_MAX_RETRIES=0",
            "RUNNER_HEALTH_PORT=0",  # replicas on the host network would share one port
            "RUNNER_WAIT_SECONDS=20",
            "RUNNER_POLL_SECONDS=1",
            "RUNNER_KILL_GRACE_SECONDS=5",
            "RUNNER_LOG_FORMAT=json",
            "",
        ]))

    def compose(self, *args: str, timeout: float = 900, check: bool = True,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """The project's compose files, as an operator runs them (``env``: the shell's)."""
        files = [a for f in COMPOSE_FILES for a in ("-f", str(DOCKER_DIR / f))]
        proc = subprocess.run([*self.compose_cmd, *files, "--env-file", str(self.env_file), *args],
                              env={**self.engine.env, **(env or {})}, cwd=DOCKER_DIR,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def containers(self) -> list[str]:
        out = self.compose("ps", "-q", "runner").stdout.split()
        return sorted(out)

    def inspect(self, cid: str) -> dict:
        return json.loads(self.engine.docker("inspect", cid).stdout)[0]

    def sql(self, query: str, *params):
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def enqueue(self, prompt: str, config: dict, **extra) -> str:
        cols = {"prompt": prompt, "config": json.dumps(config), **extra}
        names = ", ".join(cols)
        marks = ", ".join(["%s"] * len(cols))
        return str(self.sql(f"INSERT INTO jobs ({names}) VALUES ({marks}) RETURNING id", *cols.values())[0][0])

    def job(self, job_id: str) -> dict:
        rows = self.sql("SELECT status, attempts, claimed_by, error, result FROM jobs WHERE id = %s", job_id)
        return dict(zip(("status", "attempts", "claimed_by", "error", "result"), rows[0], strict=True))

    def wait_job(self, job_id: str, statuses: set[str], timeout: float = 240) -> dict:
        return wait_until(f"job {job_id} to be {statuses}",
                          lambda: (j := self.job(job_id))["status"] in statuses and j, timeout)

    def logs(self, cid: str) -> str:
        proc = self.engine.docker("logs", cid, check=False)
        return proc.stdout + proc.stderr


def host_processes(root_pid: int) -> list[dict]:
    """Every process under root_pid (the container's tini, as the host sees it)."""
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        try:
            status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ":\t" in line)
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                        for c in (t / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        eff = int(status["CapEff"].strip(), 16)
        found.append({"pid": pid, "ppid": int(status["PPid"]), "uid": int(status["Uid"].split()[1]), "cmd": cmd,
                      "caps": {name for bit, name in CAPS.items() if eff >> bit & 1},
                      "other_caps": eff & ~sum(1 << b for b in CAPS)})
        todo += children
    return found


def container_processes(stack: Stack, cid: str) -> list[dict]:
    return host_processes(stack.inspect(cid)["State"]["Pid"])


@pytest.fixture(scope="module")
def stack(request, pg_admin_dsn):
    if not _selected(request.config):
        pytest.skip("the container test runs with -m container (bin/test does) or RUNNER_CONTAINER_TEST=1")
    if not pg_admin_dsn.startswith("postgresql://") or "127.0.0.1" not in pg_admin_dsn:
        pytest.skip(f"the containers need a PostgreSQL on 127.0.0.1 over TCP; this run has {pg_admin_dsn.split('@')[-1]}")
    work = Path(tempfile.mkdtemp(prefix="rct-", dir="/tmp"))  # short: dockerd's socket lives here
    work.chmod(0o755)
    try:
        engine = engines.find_or_start(work / "engine")
    except engines.Unavailable as exc:
        shutil.rmtree(work, ignore_errors=True)
        pytest.skip(f"no Docker engine can be had on this machine: {exc}")
    for note in engine.notes:
        report(request, note)
    responder = {"reply": text("Done in the container.")}
    api = FakeAnthropic(lambda body: responder["reply"]).start()
    s = None
    try:
        base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", (DOCKER_DIR / "Dockerfile").read_text(), re.M).group(1)
        started = time.monotonic()
        how = engines.ensure_base_image(engine, base, work)
        report(request, f"base image {base}: {how} ({time.monotonic() - started:.0f}s)"
               + (" — a STAND-IN made with debootstrap (Debian's python 3.11.2 in /usr/bin), "
                  "not the official image" if how == "stand-in" else ""))
        compose = engines.compose_command(engine)
        s = Stack(engine, compose, work, pg_admin_dsn, api)
        s.responder = responder
        report(request, f"compose: {' '.join(compose)} "
               f"({subprocess.run([*compose, 'version', '--short'], env=engine.env, capture_output=True, text=True).stdout.strip()})")
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(s.role), sql.Literal(s.password)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(s.dbname), sql.Identifier(s.role)))
        yield s
    finally:
        if s is not None:
            if request.session.testsfailed:  # what the containers said, for the failure
                for cid in s.compose("ps", "-q", check=False).stdout.split():
                    report(request, f"logs of {cid[:12]} (tail):\n{s.logs(cid)[-4000:]}")
            s.compose("down", "--remove-orphans", "--timeout", str(GRACE_S), check=False)
            with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(s.dbname)))
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(s.role)))
        api.stop()
        if engine.started_pid is not None:
            # Old builds' layers, but not the build stages' caches of the last days (they are
            # dangling too: no tagged image has them as parents).
            engine.docker("image", "prune", "--force", "--filter", "until=72h", check=False)
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------ the scenario


def hold_job(stack: Stack) -> tuple[str, list[dict]]:
    """A `command` job that runs until /data/jobs/HOLD is gone; the container's processes
    seen while it ran."""
    hold = stack.data / "jobs" / "HOLD"
    hold.touch()
    try:
        job_id = stack.enqueue("Wait for the test.", {"agent": "command"})
        stack.wait_job(job_id, {"running"}, timeout=120)
        procs = wait_until("the agent's process", lambda: (p := container_processes(stack, stack.cid))
                           and any("HOLD" in x["cmd"] for x in p) and p, timeout=60)
    finally:
        hold.unlink()
    row = stack.wait_job(job_id, {"succeeded", "failed"})
    assert row["status"] == "succeeded", row
    return job_id, procs


def split(procs: list[dict]) -> tuple[dict, list[dict], list[dict]]:
    tini, *rest = procs
    assert tini["cmd"].startswith("/usr/bin/tini") and tini["uid"] == 0, tini
    agent_pids = {p["pid"] for p in rest if "HOLD" in p["cmd"]}
    for p in rest:  # host_processes lists parents before their children
        if p["ppid"] in agent_pids:
            agent_pids.add(p["pid"])
    agent = [p for p in rest if p["pid"] in agent_pids]
    assert agent, rest
    assert all(p["uid"] != 0 for p in rest), [(p["uid"], p["cmd"]) for p in rest]
    assert all(p["other_caps"] == 0 for p in procs), "only the caps docker-compose.yml grants"
    return tini, [p for p in rest if p not in agent], agent


def test_image_builds_from_the_dockerfile_within_its_size_budget(stack, request):
    started = time.monotonic()
    stack.compose("build", "runner", timeout=1800)
    took = time.monotonic() - started
    image = "runner-agent:container-test"
    size_mb = int(stack.engine.docker("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6
    report(request, f"build: {took:.0f}s; image {image}: {size_mb:.0f} MB (budget {SIZE_BUDGET_MB} MB)")
    layers = stack.engine.docker("history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image).stdout
    for line in layers.splitlines():
        size, _, step = line.partition("\t")
        if not size.startswith("0B"):
            step = re.sub(r"^(\|\d+ \S+=\S+( \S+=\S+)* )?/bin/(ba)?sh (-o pipefail )?-c (#\(nop\) )?", "", step)
            report(request, f"  layer {size:>8}  {' '.join(step.split())[:100]}")
    assert size_mb <= SIZE_BUDGET_MB
    # The CLI in the image is the native executable; no Node.js unless asked for.
    probe = stack.engine.docker("run", "--rm", "--network", "host", "--entrypoint", "sh", image, "-c",
                                "claude --version; command -v node || echo no-node")
    assert "(Claude Code)" in probe.stdout and "no-node" in probe.stdout, probe.stdout + probe.stderr


def test_the_entrypoint_migrates_an_empty_database_and_the_healthcheck_turns_healthy(stack, request):
    assert stack.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0] == 0
    stack.compose("up", "-d", "--no-deps", "--no-build", "runner")
    [cid] = stack.containers()
    stack.cid = cid
    started = time.monotonic()
    # The first HEALTHCHECK runs one interval (30 s) after the start.
    health = wait_until("the container to turn healthy",
                        lambda: (h := stack.inspect(cid)["State"].get("Health", {}).get("Status")) in ("healthy", "unhealthy") and h,
                        timeout=150, every=2)
    report(request, f"up to {health}: {time.monotonic() - started:.0f}s")
    assert health == "healthy", stack.logs(cid)[-3000:]
    tables = {r[0] for r in stack.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"jobs", "workers", "job_events", "alembic_version"} <= tables
    logs = stack.logs(cid)
    assert "database schema up to date" in logs
    assert stack.password not in logs  # the password never shows


def test_a_stub_job_succeeds_and_its_log_is_on_the_share(stack):
    job_id = stack.enqueue("Say hello from the stub.", {"agent": "stub"})
    row = stack.wait_job(job_id, {"succeeded", "failed"})
    assert row["status"] == "succeeded", (row, stack.logs(stack.cid)[-3000:])
    assert list((stack.data / "logs").rglob(f"*{job_id}*")), "the job log is in the mounted log dir"
    # `runner logs` on the host reads it from the share.
    env = {**os.environ, "DATABASE_URL": stack.url, "RUNNER_LOG_DIR": str(stack.data / "logs"),
           "PYTHONPATH": str(ROOT)}
    shown = subprocess.run([sys.executable, "-m", "runner", "logs", job_id], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "stub agent: would ask a coding agent to" in shown.stdout


def test_by_default_the_agent_runs_under_its_own_uid_without_capabilities(stack):
    _, runner, agent = split(hold_job(stack)[1])
    assert all(p["uid"] == AGENT_UID and p["caps"] == set() for p in agent), agent
    # The runner holds only what it needs to start, signal and clean up after that uid.
    assert all(p["uid"] == RUNNER_UID and p["caps"] <= RUNNER_CAPS for p in runner), runner
    assert any(p["caps"] == RUNNER_CAPS for p in runner), runner


def test_a_real_claude_cli_job_succeeds_against_the_loopback_api(stack):
    stack.responder["reply"] = text("Done in the container.")
    before = len(stack.api.message_requests)
    job_id = stack.enqueue("Say done.", {"agent": "claude", "model": "claude-sonnet-4-5",
                                         "permission_mode": "acceptEdits", "max_turns": 3})
    row = stack.wait_job(job_id, {"succeeded", "failed", "blocked"})
    assert row["status"] == "succeeded", (row, stack.logs(stack.cid)[-3000:])
    assert row["result"]["summary"] == "Done in the container."
    assert len(stack.api.message_requests) > before  # the CLI in the container called the host


def test_docker_stop_mid_run_hands_the_job_back_and_a_restart_completes_it(stack, request):
    stack.responder["reply"] = slow_text(1200, 0.1)  # two minutes of streaming
    job_id = stack.enqueue("Tell a long story.", {"agent": "claude", "model": "claude-sonnet-4-5",
                                                  "permission_mode": "acceptEdits", "max_turns": 3})
    stack.wait_job(job_id, {"running"}, timeout=120)
    wait_until("the CLI to stream", lambda: any(r.path == "/v1/messages" and "long story" in json.dumps(r.body)
                                                for r in stack.api.message_requests), timeout=60)
    procs = container_processes(stack, stack.cid)
    pids = [p["pid"] for p in procs]
    assert any(p["cmd"].startswith("/usr/local/bin/claude") for p in procs), [p["cmd"] for p in procs]
    started = time.monotonic()
    stop = stack.engine.docker("stop", "--time", str(GRACE_S), stack.cid, timeout=GRACE_S + 60)
    state = stack.inspect(stack.cid)["State"]
    report(request, f"docker stop mid-run: exit {state['ExitCode']} after {time.monotonic() - started:.0f}s "
                    f"(stop_grace_period {GRACE_S}s)")
    logs = stack.logs(stack.cid)
    # Ended by the SIGTERM path, not by Docker's SIGKILL at the end of the grace period (137).
    assert state["ExitCode"] in (0, 143) and not state["OOMKilled"], (state, logs[-3000:], stop.stderr)
    assert "FATAL tini" not in logs and "Operation not permitted" not in logs
    row = stack.job(job_id)
    assert row["status"] == "queued" and row["attempts"] == 0, row  # the attempt refunded
    assert [p for p in pids if Path(f"/proc/{p}").exists()] == [], "nothing of the container runs on"
    stack.responder["reply"] = text("Finished after the restart.")
    stack.engine.docker("start", stack.cid)
    row = stack.wait_job(job_id, {"succeeded", "failed"})
    assert row["status"] == "succeeded" and row["attempts"] == 1, row
    assert row["result"]["summary"] == "Finished after the restart."


def test_three_replicas_share_the_queue_with_distinct_worker_ids(stack):
    stack.compose("up", "-d", "--no-deps", "--no-build", "--scale", "runner=3", "runner")
    cids = stack.containers()
    assert len(cids) == 3
    jobs = [stack.enqueue(f"Job {n} of the fleet.", {"agent": "stub"}) for n in range(9)]
    rows = [stack.wait_job(j, {"succeeded", "failed"}) for j in jobs]
    assert [r["status"] for r in rows] == ["succeeded"] * 9
    assert all(r["attempts"] == 1 for r in rows)
    claims = stack.sql("SELECT job_id::text, count(*) FROM job_events WHERE event = 'claimed' "
                       "AND job_id = ANY(%s::uuid[]) GROUP BY job_id", jobs)
    assert sorted(c for _, c in claims) == [1] * 9, claims  # each job ran exactly once
    # Host networking gives them one hostname: their worker ids (and state folders on the
    # share) carry their container ids.
    hostname = os.uname().nodename
    ids = {f"{hostname}-{cid[:12]}" for cid in cids}
    wait_until("the three workers to report in", lambda: ids <= {r[0] for r in stack.sql("SELECT id FROM workers")},
               timeout=120)
    assert ids <= {d.name for d in (stack.data / "state").iterdir() if d.is_dir()}


def test_sharing_the_runners_uid_is_an_explicit_choice_and_then_nobody_holds_a_capability(stack):
    stack.compose("up", "-d", "--no-deps", "--no-build", "--scale", "runner=1", "runner",
                  env={"RUNNER_AGENT_USER": "", "RUNNER_REQUIRE_AGENT_ISOLATION": "false"})
    [stack.cid] = stack.containers()  # a changed setting recreates the container
    _, runner, agent = split(hold_job(stack)[1])
    assert all(p["uid"] == RUNNER_UID and p["caps"] == set() for p in runner + agent), runner + agent
