"""What an idle worker costs, whole: runner beside pgqueuer's idle worker, in the same run.

    python benchmarks/idle_worker.py [--seconds 300] [--baseline REV ...]

Each system waits on an empty queue of its own fresh database, all of them at the same
time (so they share the same load): runner as deployed — ``bin/run-agent.sh`` running
``python -m runner.one_job`` iterations with the production settings (RUNNER_WAIT_SECONDS,
RUNNER_POLL_SECONDS and the rest at their defaults) — and pgqueuer 1.6.0's
``QueueManager.run()`` with its defaults and a no-op entrypoint (benchmarks/.venv, as
peers.py installs it). ``--baseline REV`` adds runner as of that git revision (its
``runner/`` and ``bin/``).

After a warm-up (the first iteration's start, pgqueuer's start), CPU is sampled every
0.5 s: every process of the worker's tree (utime + stime + the children it reaped, from
/proc/<pid>/stat) and every backend of its database (pg_stat_activity → /proc; a backend
that ends between samples loses at most half a second of its time). Reported: CPU
seconds per 10 minutes, client and server; processes started (the tree's new pids).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import REPO, fresh_database, loadavg, print_header, table  # noqa: E402

import psycopg  # noqa: E402

VENV = HERE / ".venv"
TICKS = os.sysconf("SC_CLK_TCK")
WARM_UP_S = 8.0

PGQ_WORKER = """
import asyncio, sys
import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

async def go():
    conn = await asyncpg.connect(sys.argv[1])
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        pass

    await qm.run()  # its defaults: as a user would start it

asyncio.run(go())
"""


def ensure_pgqueuer() -> Path:
    py = VENV / "bin" / "python"
    probe = [str(py), "-c", "import pgqueuer, asyncpg"]
    if not py.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        print("installing pgqueuer into benchmarks/.venv …", file=sys.stderr)
        if not py.exists():
            subprocess.run(["python3.11", "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")],
                       check=True)
    return py


def proc_times(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds incl. reaped children) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based here
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / TICKS


def tree(root: int) -> dict[int, float]:
    """Every live process under root (root included) with its CPU seconds."""
    table_: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = proc_times(int(entry))
            if got is not None:
                table_[int(entry)] = got
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _cpu) in table_.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    return {pid: table_[pid][1] for pid in members if pid in table_}


class Subject:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], db_url: str,
                 cwd: Path) -> None:
        self.name, self.db = name, psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
        # cwd: `python -m` puts it first on sys.path, before PYTHONPATH — a checkout there
        # would be run instead of the revision asked for
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.seen: set[int] = set()
        self.client = {}  # pid → last CPU seen (a process that ended keeps its last figure)
        self.server = {}
        self.base_client = self.base_server = 0.0
        self.started_pids = 0
        self.reaped_base = 0.0

    def sample(self, monitor: psycopg.Connection, counting: bool) -> None:
        now = tree(self.proc.pid)
        new = set(now) - self.seen
        if counting:
            self.started_pids += len(new)
        self.seen |= set(now)
        self.client.update(now)
        for (pid,) in monitor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                      (self.db,)).fetchall():
            got = proc_times(pid)
            if got is not None:
                self.server[pid] = got[1]

    def totals(self) -> tuple[float, float]:
        # The root's figure holds what it reaped; a reaped child's own last figure is then
        # counted twice — so count, of the processes that ended, only those whose time the
        # root cannot hold (none here: every process of the tree is the root's descendant,
        # reaped by its own parent, whose cutime then holds it). Live figures only:
        live = tree(self.proc.pid)
        client = sum(live.values())
        return client, sum(self.server.values())

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def runner_subject(name: str, src: Path, url: str, root: Path, extra: dict[str, str]) -> Subject:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_") and k != "DATABASE_URL"}
    env.update({
        "DATABASE_URL": url, "PYTHONPATH": str(src),
        "RUNNER_JOB_ROOT": str(root / "jobs"), "RUNNER_CACHE_DIR": str(root / "cache"),
        "RUNNER_LOG_DIR": str(root / "logs"), "RUNNER_STATE_DIR": str(root / "state"),
        "RUNNER_PYTHON": sys.executable, "RUNNER_DEFAULT_AGENT": "command",
        "RUNNER_AGENT_COMMAND": "true",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **extra,
    })
    root.mkdir(parents=True, exist_ok=True)
    return Subject(name, ["bash", str(src / "bin" / "run-agent.sh")], env, url, root)


def export_tree(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "runner", "bin"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--baseline", metavar="REV", action="append", default=[])
    ap.add_argument("--env", metavar="RUNNER_X=V", action="append", default=[],
                    help="a setting for every runner worker (default: production defaults)")
    args = ap.parse_args()
    pgq_py = ensure_pgqueuer()
    print_header("An idle worker, whole, beside pgqueuer's", sys.argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        subjects: list[Subject] = []
        systems = [("runner (this checkout)", REPO)] + [
            (f"runner at {rev}", export_tree(rev, tmp / f"src-{rev}")) for rev in args.baseline]
        for i, (name, src) in enumerate(systems):
            url = stack.enter_context(fresh_database(f"idle{i}"))
            subjects.append(runner_subject(name, src, url, tmp / f"r{i}",
                                           dict(kv.split("=", 1) for kv in args.env)))
        pgq_url = stack.enter_context(fresh_database("idlepgq", migrate=False))
        subprocess.run([str(pgq_py.with_name("pgq")), "--pg-dsn", pgq_url, "install"],
                       check=True, capture_output=True)
        script = tmp / "pgq_worker.py"
        script.write_text(PGQ_WORKER)
        subjects.append(Subject("pgqueuer 1.6.0 (defaults)", [str(pgq_py), str(script), pgq_url],
                                dict(os.environ), pgq_url, tmp))
        load0 = loadavg()
        try:
            with psycopg.connect(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                                 autocommit=True) as monitor:
                start = time.monotonic()
                while time.monotonic() - start < WARM_UP_S:
                    for s in subjects:
                        s.sample(monitor, counting=False)
                    time.sleep(0.5)
                base = {s.name: s.totals() for s in subjects}
                t0 = time.monotonic()
                while time.monotonic() - t0 < args.seconds:
                    for s in subjects:
                        s.sample(monitor, counting=True)
                    time.sleep(0.5)
                elapsed = time.monotonic() - t0
                end = {s.name: s.totals() for s in subjects}
        finally:
            for s in subjects:
                s.stop()
        scale = 600 / elapsed
        rows = []
        for s in subjects:
            c = (end[s.name][0] - base[s.name][0]) * scale
            srv = (end[s.name][1] - base[s.name][1]) * scale
            rows.append([s.name, load0, f"{elapsed:.0f}", f"{c:.2f}", f"{srv:.2f}", f"{c + srv:.2f}",
                         f"{s.started_pids * scale:.1f}", loadavg()])
        print(table(["worker", "load before", "seconds", "client CPU s / 10 min",
                     "server CPU s / 10 min", "total", "processes started / 10 min", "load after"],
                    rows))


if __name__ == "__main__":
    main()
