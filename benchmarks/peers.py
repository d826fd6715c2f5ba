"""Enqueue → task start, worker waiting: runner beside pgqueuer, procrastinate and
graphile-worker on the same PostgreSQL, in one run, interleaved; and a raw NOTIFY round
trip between two processes as the floor.

    python benchmarks/peers.py [--quick] [--runs N] [--jobs N] [--systems a,b,...]
                               [--baseline GIT_REV ...]

Every system runs as two processes: a worker, waiting on an empty queue, and an enqueuer
that uses the system's own enqueue API. The orchestrator (this process) tells the
enqueuer to add job i; the enqueuer takes CLOCK_MONOTONIC just before its enqueue call
and reports it; the worker takes CLOCK_MONOTONIC first thing when its task starts and
reports it. Latency = start − before-enqueue. After each job the orchestrator waits
GAP seconds (the worker is back to waiting) before the next one. Every worker's poll is
set to 600 s, so only a NOTIFY can wake it.

* runner: the waiting path of ``runner.one_job`` — ``claim_or_wait`` (requeue_expired +
  ``Queue.claim``, LISTEN/NOTIFY in ``runner.listen``); "task start" = ``Queue.claim``
  returned the job. Enqueue = ``Queue.enqueue``. Project interpreter.
* pgqueuer: ``QueueManager`` on asyncpg (its recommended driver), schema by ``pgq
  install``, a no-op async entrypoint; enqueue = ``Queries.enqueue``.
* procrastinate: ``App`` with ``PsycopgConnector``, schema by ``apply_schema_async``, a
  no-op async task, ``run_worker_async(listen_notify=True)``; enqueue = ``defer_async``.
* graphile-worker (Node): ``run({concurrency: 1})`` with a no-op task; enqueue =
  ``WorkerUtils.addJob`` (benchmarks/peers_graphile.js).
* raw NOTIFY: a psycopg process LISTENs; the "enqueuer" runs ``SELECT pg_notify``.

Each system gets a fresh database per run. The Python peers live in ``benchmarks/.venv``
(benchmarks/requirements.txt), graphile-worker in ``benchmarks/.node`` (npm); both are
installed by this script when missing and are git-ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue as stdqueue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
NODE_DIR = HERE / ".node"
GRAPHILE_VERSION = "0.17.3"
WARMUP = 10
GAP = 0.05  # after a task started, time for the worker to be waiting again


def monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def out(line: str) -> None:
    sys.stdout.write(f"@@ {line}\n")
    sys.stdout.flush()


def stdin_lines():
    for line in sys.stdin:
        line = line.strip()
        if line:
            yield line


async def enqueue_loop(enqueue) -> None:
    """The asyncio enqueuers' loop: job ids from stdin, each timed just before its enqueue."""
    out("ready")
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line:
            break
        t0 = monotonic()
        await enqueue(line)
        out(f"enq {line} {t0}")


# -- roles: each runs in its own process ------------------------------------------------

def runner_src() -> str:
    """This checkout's runner, or a baseline's (--baseline: the same run measures both)."""
    return os.environ.get("PEERS_RUNNER_SRC") or str(HERE.parent)


def runner_worker(url: str) -> None:
    sys.path.insert(0, runner_src())
    import runner.one_job as one_job
    from runner.queue import Queue
    from runner.settings import load_settings

    settings = load_settings(DATABASE_URL=url, wait_seconds=600, poll_seconds=600,
                             queues=["default"])
    stop = threading.Event()
    with Queue.open(settings.dsn, "bench-peers") as q:
        out("ready")
        while True:
            claim = one_job.claim_or_wait(q, settings, stop)
            t = monotonic()
            if claim is None:
                continue
            out(f"start {claim.job['prompt']} {t}")
            q.finish(claim, "succeeded", result={})


def runner_enqueue(url: str) -> None:
    sys.path.insert(0, runner_src())
    from runner.queue import Queue

    with Queue.open(url, "bench-enqueuer") as q:
        out("ready")
        for i in stdin_lines():
            t0 = monotonic()
            q.enqueue(prompt=i, config={"agent": "command"})
            out(f"enq {i} {t0}")


def raw_worker(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN bench_raw")
        out("ready")
        while True:
            for note in conn.notifies():
                out(f"start {note.payload} {monotonic()}")


def raw_enqueue(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        out("ready")
        for i in stdin_lines():
            t0 = monotonic()
            conn.execute("SELECT pg_notify('bench_raw', %s)", [i])
            out(f"enq {i} {t0}")


def pgqueuer_worker(url: str) -> None:
    from datetime import timedelta

    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

    pgq = Path(sys.executable).with_name("pgq")
    subprocess.run([str(pgq), "--pg-dsn", url, "install"], check=True, capture_output=True)

    async def go() -> None:
        conn = await asyncpg.connect(url)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            out(f"start {job.payload.decode()} {monotonic()}")

        asyncio.get_running_loop().call_later(0.5, out, "ready")
        await qm.run(dequeue_timeout=timedelta(seconds=600))

    asyncio.run(go())


def pgqueuer_enqueue(url: str) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    async def go() -> None:
        conn = await asyncpg.connect(url)
        q = Queries(AsyncpgDriver(conn))
        await enqueue_loop(lambda line: q.enqueue("noop", line.encode()))

    asyncio.run(go())


def _procrastinate_app(url: str):
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop(i: str) -> None:
        out(f"start {i} {monotonic()}")

    return app


def procrastinate_worker(url: str) -> None:
    app = _procrastinate_app(url)

    async def go() -> None:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            asyncio.get_running_loop().call_later(0.5, out, "ready")
            await app.run_worker_async(queues=["default"], concurrency=1, wait=True,
                                       listen_notify=True, fetch_job_polling_interval=600)

    asyncio.run(go())


def procrastinate_enqueue(url: str) -> None:
    app = _procrastinate_app(url)

    async def go() -> None:
        async with app.open_async():
            task = app.configure_task(name="noop", queue="default")
            await enqueue_loop(lambda line: task.defer_async(i=line))

    asyncio.run(go())


ROLES = {
    ("runner", "worker"): runner_worker, ("runner", "enqueue"): runner_enqueue,
    ("raw", "worker"): raw_worker, ("raw", "enqueue"): raw_enqueue,
    ("pgqueuer", "worker"): pgqueuer_worker, ("pgqueuer", "enqueue"): pgqueuer_enqueue,
    ("procrastinate", "worker"): procrastinate_worker,
    ("procrastinate", "enqueue"): procrastinate_enqueue,
}
SYSTEMS = ["raw", "runner", "pgqueuer", "procrastinate", "graphile-worker"]
LABEL = {"raw": "raw NOTIFY (psycopg, 2 processes)", "runner": "runner",
         "pgqueuer": "pgqueuer 1.6.0 (asyncpg)", "procrastinate": "procrastinate 3.10.0 (psycopg)",
         "graphile-worker": f"graphile-worker {GRAPHILE_VERSION} (node)"}


# -- installing the peers ---------------------------------------------------------------

def ensure_peers(systems: list[str]) -> None:
    py = VENV / "bin" / "python"
    if {"pgqueuer", "procrastinate"} & set(systems):
        probe = [str(py), "-c", "import pgqueuer, procrastinate, asyncpg"]
        if not py.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
            print("installing the Python peers into benchmarks/.venv …", file=sys.stderr)
            if not py.exists():
                subprocess.run(["python3.11", "-m", "venv", str(VENV)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "-r",
                            str(HERE / "requirements.txt")], check=True)
    if "graphile-worker" in systems and not (NODE_DIR / "node_modules" / "graphile-worker").exists():
        print("installing graphile-worker into benchmarks/.node …", file=sys.stderr)
        NODE_DIR.mkdir(exist_ok=True)
        (NODE_DIR / "package.json").write_text('{"name": "runner-bench-peers", "private": true}\n')
        subprocess.run(["npm", "install", "--silent", f"graphile-worker@{GRAPHILE_VERSION}"],
                       cwd=NODE_DIR, check=True)


BASELINES: dict[str, str] = {}  # "runner@<rev>" → an exported tree of that revision


def export_baseline(rev: str, into: Path) -> str:
    """`git archive` of rev (no worktree, nothing in the repository changes)."""
    sys.path.insert(0, str(HERE))
    from _common import export_runner

    BASELINES[f"runner@{rev}"] = export_runner(rev, into / rev)
    LABEL[f"runner@{rev}"] = f"runner at {rev} (baseline)"
    return f"runner@{rev}"


def command(system: str, role: str, url: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if system in BASELINES:
        env["PEERS_RUNNER_SRC"] = BASELINES[system]
        system = "runner"
    if system == "graphile-worker":
        env["NODE_PATH"] = str(NODE_DIR / "node_modules")
        return ["node", str(HERE / "peers_graphile.js"), role, url], env
    # runner and raw NOTIFY use the project's interpreter; the peers their own venv
    py = sys.executable if system in ("runner", "raw") else str(VENV / "bin" / "python")
    return [py, str(Path(__file__).resolve()), "--role", role, "--system", system, url], env


# -- the orchestrator -------------------------------------------------------------------

class Proc:
    """A role's process; its "@@ …" lines arrive on a queue, everything else is dropped."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.lines: stdqueue.Queue[list[str]] = stdqueue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            if line.startswith("@@ "):
                self.lines.put(line[3:].split())
        self.lines.put(["eof"])

    def expect(self, word: str, timeout: float = 60.0) -> list[str]:
        while True:
            try:
                got = self.lines.get(timeout=timeout)
            except stdqueue.Empty:
                raise RuntimeError(f"no {word!r} from {self.p.args[:4]} in {timeout} s") from None
            if got[0] == "eof":
                raise RuntimeError(f"{self.p.args[:4]} exited ({self.p.poll()}) before {word!r}")
            if got[0] == word:
                return got[1:]

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def measure(system: str, n: int) -> list[float]:
    from _common import fresh_database

    runner_like = system == "runner" or system in BASELINES
    tag = "runner" if runner_like else system.replace("-", "_")
    with fresh_database(tag, migrate=runner_like) as url:
        worker = Proc(*command(system, "worker", url))
        enqueuer = None
        try:
            worker.expect("ready", 120)
            enqueuer = Proc(*command(system, "enqueue", url))
            enqueuer.expect("ready", 120)
            time.sleep(1.0)  # the worker's LISTEN is in place and its first look done
            lat = []
            for i in range(n + WARMUP):
                enqueuer.send(str(i))
                i0, t0 = enqueuer.expect("enq", 30)
                i1, t1 = worker.expect("start", 30)
                assert i0 == i1 == str(i), (system, i, i0, i1)
                if i >= WARMUP:
                    lat.append((float(t1) - float(t0)) * 1000.0)
                time.sleep(GAP)
            return lat
        finally:
            if enqueuer is not None:
                enqueuer.stop()
            worker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="1 run of 40 jobs")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--baseline", action="append", default=[], metavar="REV",
                    help="also measure runner as of this git revision, in the same run")
    ap.add_argument("--role")
    ap.add_argument("--system")
    ap.add_argument("url", nargs="?")
    args = ap.parse_args()
    if args.role:
        ROLES[(args.system, args.role)](args.url)
        return
    if args.quick:
        args.runs, args.jobs = 1, 40
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    ensure_peers(systems)
    exported = tempfile.TemporaryDirectory(prefix="peers-baseline-")
    systems += [export_baseline(rev, Path(exported.name)) for rev in args.baseline]

    sys.path.insert(0, str(HERE))
    from _common import loadavg, median, pct, print_header, table

    print_header("Enqueue → task start, worker waiting: runner beside its peers", sys.argv)
    peers = [s for s in systems if s not in ("raw", "runner") and s not in BASELINES]
    p50s: dict[str, list[float]] = {s: [] for s in systems}
    rows = []
    for r in range(args.runs):
        order = systems[r % len(systems):] + systems[:r % len(systems)]  # interleaved
        got: dict[str, tuple[str, list[float], str]] = {}
        for s in order:
            before = loadavg()
            lat = measure(s, args.jobs)
            got[s] = (before, lat, loadavg())
            p50s[s].append(pct(lat, 50))
            print(f"  run {r + 1}: {s} p50 {pct(lat, 50):.3f} ms", file=sys.stderr, flush=True)
        raw = pct(got["raw"][1], 50) if "raw" in got else float("nan")
        fastest = min((pct(got[s][1], 50) for s in peers), default=float("nan"))
        for s in systems:
            before, lat, after = got[s]
            p50 = pct(lat, 50)
            rows.append([r + 1, LABEL[s], before, len(lat), p50, pct(lat, 95), pct(lat, 99),
                         max(lat), f"{p50 / raw:.2f}×", f"{p50 / fastest:.2f}×" if peers else "–",
                         after])
    print("Enqueue → task start (ms), nearest-rank percentiles; ratios are p50 / p50 of the "
          "same run.\n")
    print(table(["run", "system", "load before", "n", "p50", "p95", "p99", "max",
                 "× raw NOTIFY", "× fastest peer", "load after"], rows))
    print("\nMedian over the runs of each run's p50 (ms):\n")
    raw_m = median(p50s["raw"]) if "raw" in systems else float("nan")
    fast_m = min((median(p50s[s]) for s in peers), default=float("nan"))
    print(table(["system", "p50 (median of runs)", "× raw NOTIFY", "× fastest peer"],
                [[LABEL[s], median(p50s[s]), f"{median(p50s[s]) / raw_m:.2f}×",
                  f"{median(p50s[s]) / fast_m:.2f}×" if peers else "–"] for s in systems]))
    print(f"\n- load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
