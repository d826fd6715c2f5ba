"""The container's start-up path end to end, on the host: ``bin/entrypoint.sh`` with a real
PostgreSQL database that starts out EMPTY (the entrypoint's ``runner migrate`` creates the
schema), the real ``runner`` CLI, the real supervisor (bin/run-agent.sh) and iteration
(``python -m runner.one_job``), and the fake agent (``config.agent = "command"``).

One job goes all the way through: the entrypoint migrates, writes the git config,
pre-clones RUNNER_PRECLONE_REPOS into the mirror cache, starts the health server (when
this branch's CLI has ``runner health --serve``) and execs the supervisor; a job enqueued
with ``runner enqueue`` is claimed, the fake agent commits a file, the job succeeds, its
log is linked under logs/jobs/. Then SIGTERM goes to the entrypoint's pid — what tini does
on ``docker stop`` — and everything it started must be gone well within the compose
``stop_grace_period``. The second test sends SIGTERM while the agent runs: the job goes
back to the queue with its attempt refunded and the agent is gone.

The entrypoint runs in a session of its own (start_new_session=True), so its pid is also
the session id of everything it starts, except the agent and git, which get sessions of
their own; those are found by their working directory under the test's temp dir and by a
marker variable in their environment.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

from runner.repo_cache import mirror_dir
from tests.agents.proc import alive, pid_in, wait_for
from tests.conftest import fake, make_git_repo

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "bin" / "entrypoint.sh"
FAKE_AGENT = ROOT / "tests" / "fakes" / "fake_agent.py"

# Well below the compose file's stop_grace_period (60 s): the iteration listens for at
# most RUNNER_WAIT_SECONDS and stops the agent within RUNNER_KILL_GRACE_SECONDS.
STOP_WITHIN_S = 15
KILL_GRACE_S = 2


@functools.cache
def health_server_available() -> bool:
    """Whether this branch's CLI has ``runner health --serve``."""
    proc = subprocess.run([sys.executable, "-m", "runner", "health", "--help"],
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0 and "--serve" in proc.stdout



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ processes


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, sid) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[2]), int(fields[3])


def leftovers(session: int, tag: str, sandbox: Path) -> list[str]:
    """Live processes that belong to the entrypoint started in ``session``: in its session
    or process group, carrying the test's marker in their environment, or working in the
    test's temp dir (the agent and git run in sessions of their own)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        stat = _proc_stat(pid)
        if stat is None or stat[0] == "Z":  # gone, or a zombie waiting for its reaper
            continue
        mine = session in (stat[1], stat[2])
        if not mine:
            try:
                mine = f"RUNNER_E2E_TAG={tag}".encode() in (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                pass
        if not mine:
            try:
                mine = Path(os.readlink(entry / "cwd")).is_relative_to(sandbox)
            except (OSError, ValueError):
                pass
        if mine:
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = "?"
            found.append(f"{pid}: {cmd.strip()}")
    return found


# ------------------------------------------------------------------ the rig


class Rig:
    """One entrypoint run: its environment, directories, database and process."""

    def __init__(self, tmp: Path, db_url: str, *, health_port: int) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.tag = uuid.uuid4().hex
        self.data = tmp / "data"
        self.state = tmp / "var" / "state"  # becomes a link into data/state/<worker>
        self.cache = self.data / "cache"
        self.logs = self.data / "logs"
        self.health_port = health_port
        self.repo_url = make_git_repo(tmp / "origin", {"README.md": "# e2e\n"})
        self.out = tmp / "entrypoint.out"
        self.proc: subprocess.Popen | None = None

        # `runner` on PATH, as the image's venv has it (the test venv has no console script).
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        cli = bin_dir / "runner"
        cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m runner "$@"\n')
        cli.chmod(0o755)
        self.cli = cli

        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RUNNER_", "GIT_")) and k not in ("DATABASE_URL", "PYTHONPATH")}
        env.update({
            # The venv first, as /opt/venv/bin in the image: `python -m runner.one_job`.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{bin_dir}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp / "home"),
            "HOSTNAME": "e2ebox",
            "RUNNER_E2E_TAG": self.tag,
            "DATABASE_URL": db_url,
            "RUNNER_DATA_DIR": str(self.data),
            "RUNNER_STATE_DIR": str(self.state),
            "RUNNER_STATE_SHARE": str(self.data / "state"),
            "RUNNER_PYTHON": sys.executable,
            "RUNNER_CLI": str(cli),
            "RUNNER_DB_WAIT_SECONDS": "20",
            "RUNNER_HEALTH_PORT": str(health_port),
            "RUNNER_HEALTH_BIND": "127.0.0.1",
            "RUNNER_PRECLONE_REPOS": self.repo_url,
            "RUNNER_ALLOW_FILE_REPOS": "1",
            "RUNNER_ALLOWED_AGENTS": "command",
            "RUNNER_DEFAULT_AGENT": "command",
            "RUNNER_AGENT_COMMAND": f"{sys.executable} {FAKE_AGENT}",
            "RUNNER_GIT_USER_NAME": "runner-e2e",
            "RUNNER_GIT_USER_EMAIL": "runner-e2e@example.invalid",
            "RUNNER_WAIT_SECONDS": "1",
            "RUNNER_POLL_SECONDS": "0.5",
            "RUNNER_LEASE_SECONDS": "6",
            "RUNNER_KILL_GRACE_SECONDS": str(KILL_GRACE_S),
            "RUNNER_STATE_HEARTBEAT_SECONDS": "1",
            "RUNNER_BACKOFF_START": "1",
            "RUNNER_BACKOFF_MAX": "2",
            "RUNNER_LOG_FORMAT": "json",
        })
        (tmp / "home").mkdir()
        self.env = env

    # -- process

    def start(self) -> None:
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen([str(ENTRYPOINT)], env=self.env, cwd=self.tmp,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def diagnostics(self) -> str:
        runs = sorted((self.logs / "runs").glob("*.log")) if (self.logs / "runs").is_dir() else []
        tail = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in runs[-3:])
        return f"--- entrypoint output\n{self.output()[-6000:]}{tail}"

    def wait(self, predicate, timeout: float, what: str):
        def check():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the entrypoint exited {self.proc.returncode} while waiting "
                                     f"for {what}\n{self.diagnostics()}")
            return predicate()
        try:
            return wait_for(check, timeout=timeout, what=what)
        except AssertionError as exc:
            if "timed out" in str(exc):
                raise AssertionError(f"{exc}\n{self.diagnostics()}") from None
            raise

    def stop(self) -> float:
        """SIGTERM to the entrypoint's pid, as tini passes on `docker stop`; seconds taken."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the entrypoint did not exit within {STOP_WITHIN_S} s of SIGTERM\n"
                                 f"{self.diagnostics()}") from None
        return time.monotonic() - started

    def leftovers(self) -> list[str]:
        assert self.proc is not None
        return leftovers(self.proc.pid, self.tag, self.tmp)

    def cleanup(self) -> None:
        """Teardown after a failed test: end what this test started, by pid."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for line in self.leftovers():
            try:
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- files and database

    def state_json(self) -> dict:
        try:
            return json.loads((self.state / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def sql(self, query: str, *params) -> list[tuple]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def job(self, job_id: str) -> dict:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            cur = conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,))
            row = cur.fetchone()
            return dict(zip([c.name for c in cur.description], row)) if row else {}

    def events(self, job_id: str) -> list[str]:
        return [r[0] for r in self.sql("SELECT event FROM job_events WHERE job_id = %s ORDER BY id", job_id)]

    def enqueue(self, config: dict, prompt: str = "e2e job") -> str:
        res = subprocess.run([str(self.cli), "enqueue", "--prompt", prompt, "--repo", self.repo_url,
                              "--config", json.dumps(config)],
                             env=self.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout.strip().splitlines()[-1]

    def wait_for_supervisor(self) -> dict:
        """Until the supervisor reports in: migrations and pre-clone are done by then."""
        return self.wait(lambda: self.state_json().get("status") in ("running",) and self.state_json(),
                         timeout=60, what="the supervisor's state.json")


@pytest.fixture
def rig(tmp_path: Path, empty_db_url: str):
    tmp_path.chmod(0o755)
    rig = Rig(tmp_path, empty_db_url, health_port=free_port() if health_server_available() else 0)
    yield rig
    rig.cleanup()


def get_health(port: int) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:  # not listening (yet)
        return None


# ------------------------------------------------------------------ the tests


def test_one_job_through_the_entrypoint_then_docker_stop(rig: Rig) -> None:
    with psycopg.connect(rig.db_url) as conn:  # really empty: the entrypoint migrates
        assert conn.execute("SELECT to_regclass('public.jobs')").fetchone()[0] is None
    rig.start()
    first = rig.wait_for_supervisor()
    out = rig.output()

    # Start-up: migrated, pre-cloned, supervisor exec'd in place.
    assert "database schema up to date (runner migrate)" in out, rig.diagnostics()
    assert rig.sql("SELECT to_regclass('public.jobs') IS NOT NULL")[0][0]
    assert f"pre-clone {rig.repo_url}: ok" in out, rig.diagnostics()
    mirror = mirror_dir(rig.cache, rig.repo_url)
    assert mirror.is_dir(), f"no mirror in {rig.cache}: {list(rig.cache.iterdir())}"
    origin_head = subprocess.run(["git", "-C", str(rig.tmp / "origin"), "rev-parse", "HEAD"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    mirrored = subprocess.run(["git", "--git-dir", str(mirror), "rev-parse", "refs/remotes/origin/HEAD"],
                              capture_output=True, text=True).stdout.strip()
    assert mirrored == origin_head
    assert rig.state.is_symlink() and rig.state.resolve() == (rig.data / "state" / "e2ebox").resolve()
    assert not (rig.state / "gitconfig").exists()  # git's credentials are the runner's own flags
    assert first["supervisor_pid"] == rig.proc.pid, "the entrypoint execs the supervisor in its own pid"

    # One job, through the CLI as an operator (or a web app's INSERT) would queue it.
    job_id = rig.enqueue(fake(stdout=["e2e: hello from the fake agent"],
                              write={"E2E.txt": "written by the fake agent\n"}, commit="Add E2E.txt"))
    row = rig.wait(lambda: rig.job(job_id).get("status") in ("succeeded", "failed", "blocked", "cancelled")
                   and rig.job(job_id), timeout=60, what=f"job {job_id} to finish")
    assert row["status"] == "succeeded", (row["error"], rig.diagnostics())
    assert row["attempts"] == 1 and row["error"] is None

    # The agent's commit is on the job's branch in the mirror.
    branch = row["branch"] or f"runner/{job_id[:8]}"
    shown = subprocess.run(["git", "--git-dir", str(mirror), "show", f"refs/heads/{branch}:E2E.txt"],
                           capture_output=True, text=True)
    assert shown.stdout == "written by the fake agent\n", (shown.stderr, row["result"])

    # logs/jobs/<id>.log: a relative link to the iteration's run log, with the agent's output.
    link = rig.logs / "jobs" / f"{job_id}.log"
    assert link.is_symlink(), sorted(p.name for p in (rig.logs / "jobs").iterdir())
    target = os.readlink(link)
    assert not os.path.isabs(target) and target.startswith("../runs/"), target
    assert link.resolve().parent == (rig.logs / "runs").resolve()
    assert "e2e: hello from the fake agent" in link.read_text()

    # The supervisor goes on (the next iteration listens); state.json says so.
    state = rig.wait(lambda: (s := rig.state_json()).get("iteration", 0) >= 2 and s,
                     timeout=30, what="the next iteration")
    assert state["status"] == "running" and state["supervisor_pid"] == rig.proc.pid
    assert state["last_exit_code"] == 0 and state["consecutive_failures"] == 0
    assert state["worker_id"].startswith("e2ebox-")
    assert not (rig.state / "UNHEALTHY").exists() and not (rig.state / "TOKEN_EXPIRED").exists()

    # The worker row, under the supervisor's worker id.
    workers = rig.sql("SELECT id, queues FROM workers WHERE id = %s", state["worker_id"])
    assert workers and workers[0][1] == ["default"], rig.sql("SELECT id FROM workers")

    if rig.health_port:
        status, body = rig.wait(lambda: get_health(rig.health_port), timeout=10, what="GET /health")
        assert status == 200 and body["healthy"] is True, body
        assert body["status"] == "running" and body["worker_id"] == state["worker_id"]

    # docker stop: SIGTERM to PID 1's child, the entrypoint's pid (now the supervisor).
    rig.stop()
    assert rig.proc.returncode == 143, rig.diagnostics()
    assert rig.state_json().get("status") == "stopped"
    try:
        wait_for(lambda: not rig.leftovers(), timeout=5, what="no process left")
    except AssertionError:
        pytest.fail(f"processes left behind: {rig.leftovers()}")
    assert "stopped on SIGTERM" in rig.output()


def test_docker_stop_while_the_agent_runs_requeues_the_job(rig: Rig) -> None:
    rig.start()
    rig.wait_for_supervisor()
    pidfile = rig.tmp / "agent.pid"
    job_id = rig.enqueue(fake(stdout=["e2e: agent started"], sleep=60, pidfile=str(pidfile)))
    agent = pid_in(pidfile, timeout=60)
    row = rig.wait(lambda: rig.job(job_id).get("status") == "running" and rig.job(job_id),
                   timeout=30, what="the job to run")
    assert row["attempts"] == 1 and alive(agent)

    rig.stop()  # well before the agent's 60 s sleep is over: it was stopped, not waited for
    assert rig.proc.returncode == 143, rig.diagnostics()

    row = rig.job(job_id)
    assert row["status"] == "queued", (row, rig.diagnostics())
    assert row["attempts"] == 0, "the interrupted attempt is refunded"
    assert row["claimed_by"] is None and row["claim_token"] is None
    assert not alive(agent)
    assert rig.state_json().get("status") == "stopped"
    try:
        wait_for(lambda: not rig.leftovers(), timeout=5, what="no process left")
    except AssertionError:
        pytest.fail(f"processes left behind: {rig.leftovers()}")
    assert "e2e: agent started" in (rig.logs / "jobs" / f"{job_id}.log").read_text()


def test_health_endpoint_of_the_entrypoint(rig: Rig) -> None:
    """GET /health from the server the entrypoint starts; it ends with the supervisor."""
    if not rig.health_port:
        pytest.skip("`runner health --serve` is not in this branch's CLI: the entrypoint "
                    "tests run with RUNNER_HEALTH_PORT=0")
    rig.start()
    state = rig.wait_for_supervisor()
    assert "health server: pid " in rig.output() and f"on port {rig.health_port}" in rig.output()
    status, body = rig.wait(lambda: get_health(rig.health_port), timeout=10, what="GET /health")
    assert status == 200 and body["healthy"] is True, body
    assert body["worker_id"] == state["worker_id"] and body["markers"] == {}
    rig.stop()
    assert rig.proc.returncode == 143
    wait_for(lambda: get_health(rig.health_port) is None, timeout=5, what="the health server to end")
    try:
        wait_for(lambda: not rig.leftovers(), timeout=5, what="no process left")
    except AssertionError:
        pytest.fail(f"processes left behind: {rig.leftovers()}")
