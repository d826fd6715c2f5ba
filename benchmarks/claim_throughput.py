"""Claim + finish throughput of runner's Queue with 8 concurrent claimers over a deep queue,
and the same workload with pgqueuer on the same PostgreSQL, in the same run.

    python benchmarks/claim_throughput.py [--quick] [--runs N] [--jobs N] [--workers N]
                                          [--no-pgqueuer] [--baseline REV] [--notify-experiment]
                                          [--flush-ms MS ...] [--main-server]

The pgqueuer half needs the benchmark-only venv of benchmarks/requirements.txt: run it as
``benchmarks/.venv/bin/python benchmarks/claim_throughput.py`` (``--no-pgqueuer`` runs the
runner half alone with any interpreter that has runner's dependencies).

* runner: a fresh migrated database; N jobs bulk-inserted with one
  ``INSERT … SELECT generate_series`` (triggers on, as a web app's INSERT would fire them:
  one ``enqueued`` event and one NOTIFY per row); VACUUM ANALYZE. Then 8 *processes*
  (multiprocessing, spawn — no GIL sharing), each ``Queue.claim`` → ``Queue.finish`` in a loop
  for a fixed duration (30 s; the queue never runs dry, so it stays 100k-deep give or
  take). jobs/s = jobs finished / (last process done − first process started),
  CLOCK_MONOTONIC across processes. (A full drain of 100k at ~200 jobs/s would take ~8
  minutes per variant on this disk, whose fdatasync takes ~2.7 ms.)
* pgqueuer: a separate fresh database, schema by its own ``pgq install``; N jobs by its own
  batched ``Queries.enqueue`` (10 000 per call); VACUUM ANALYZE. Then 8 processes, each one
  ``QueueManager`` with the asyncpg driver (the driver its docs recommend) and a no-op
  async entrypoint, ``run(mode=drain, batch_size=B)``, shut down after the same duration;
  a job counts when its entrypoint ran inside the window (pgqueuer acks in buffered
  batches, which is its design). Measured with B=1 (one job per
  dequeue, like runner) and B=10 (its default).
* ``--flush-ms MS`` (repeatable): the same runs on a private PostgreSQL whose disk flush
  waits MS longer (benchmarks/slow_disk.py) — a NAS's disk, not this VM's ~0.1 ms one,
  where how announced commits wait for the flush decides throughput. Every row says what
  one durable commit took on its server. ``--main-server`` adds the machine's own server.
* ``--notify-experiment``: the status-change NOTIFY trigger disabled (not the shipped
  schema), for this tree and, with ``--baseline``, for the baseline too: what announcing
  costs each.
"""

from __future__ import annotations

import argparse
import os
import asyncio
import multiprocessing as mp
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (admin_url, durable_commit_ms, export_runner, fresh_database, loadavg,  # noqa: E402
                     monotonic, print_header, runs_with_median_marked, table)
from slow_disk import slow_disk_server  # noqa: E402

import psycopg  # noqa: E402

ENQUEUE_CHUNK = 10_000


def collect(procs, results) -> list[tuple]:
    """One result per process; fail instead of hanging when a process died without one."""
    import queue as stdqueue

    got: list[tuple] = []
    while len(got) < len(procs):
        try:
            got.append(results.get(timeout=1))
        except stdqueue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"{len(dead)} worker process(es) failed: {[p.exitcode for p in dead]}")
    for p in procs:
        p.join()
    return got


# -- runner ------------------------------------------------------------------------------

def runner_load(url: str, n: int) -> float:
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO jobs (prompt, config, created_at)
               SELECT 'bench ' || g, '{"agent": "command"}'::jsonb,
                      now() - (%(n)s - g) * interval '1 millisecond'
               FROM generate_series(1, %(n)s) AS g""", {"n": n})
        elapsed = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("VACUUM ANALYZE job_events")
    return elapsed


def runner_worker(url: str, index: int, duration: float, barrier, results, tree: str | None = None) -> None:
    if tree is not None:  # --baseline: that revision's runner (its Queue and queries.sql)
        sys.path.insert(0, tree)
        for name in [m for m in sys.modules if m == "runner" or m.startswith("runner.")]:
            del sys.modules[name]
    from runner.queue import Queue

    done = 0
    with Queue.open(url, f"bench-claimer-{index}") as q:
        barrier.wait()
        t0 = monotonic()
        end = t0 + duration
        while monotonic() < end:
            claim = q.claim(["default"], 300)
            if claim is None:
                break
            q.finish(claim, "succeeded", result={})
            done += 1
        results.put((index, done, t0, monotonic()))


def runner_drain(url: str, n: int, workers: int, duration: float,
                 tree: str | None = None) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=runner_worker, args=(url, i, duration, barrier, results, tree))
             for i in range(workers)]
    for p in procs:
        p.start()
    got = collect(procs, results)
    done = sum(g[1] for g in got)
    wall = max(g[3] for g in got) - min(g[2] for g in got)
    with psycopg.connect(url) as conn:
        ok = conn.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0]
    assert done == ok and done < n, (done, n, ok)  # the queue never ran dry
    return {"jobs": done, "seconds": wall, "rate": done / wall}


# -- pgqueuer ----------------------------------------------------------------------------

def pgq_install(url: str) -> None:
    pgq = Path(sys.executable).with_name("pgq")
    cmd = [str(pgq)] if pgq.exists() else [sys.executable, "-m", "pgqueuer"]
    subprocess.run([*cmd, "--pg-dsn", url, "install"], check=True, capture_output=True)


async def _pgq_enqueue(url: str, n: int) -> float:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(url)
    try:
        q = Queries(AsyncpgDriver(conn))
        t0 = time.perf_counter()
        for start in range(0, n, ENQUEUE_CHUNK):
            k = min(ENQUEUE_CHUNK, n - start)
            await q.enqueue(["bench"] * k, [f"bench {start + i}".encode() for i in range(k)], [0] * k)
        return time.perf_counter() - t0
    finally:
        await conn.close()


def pgq_load(url: str, n: int) -> float:
    elapsed = asyncio.run(_pgq_enqueue(url, n))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return elapsed


def pgq_worker(url: str, index: int, batch_size: int, duration: float, barrier, results) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    async def go() -> tuple[int, float, float]:
        conn = await asyncpg.connect(url)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))
        done = 0

        end = 0.0

        @qm.entrypoint("bench")
        async def bench(job: Job) -> None:
            nonlocal done
            if monotonic() < end:
                done += 1
            else:
                qm.shutdown.set()

        barrier.wait()
        t0 = monotonic()
        end = t0 + duration
        asyncio.get_running_loop().call_later(duration, qm.shutdown.set)
        await qm.run(mode=QueueExecutionMode.drain, batch_size=batch_size)
        t1 = min(monotonic(), end)
        await conn.close()
        return done, t0, t1

    done, t0, t1 = asyncio.run(go())
    results.put((index, done, t0, t1))


def pgq_drain(url: str, n: int, workers: int, batch_size: int, duration: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=pgq_worker, args=(url, i, batch_size, duration, barrier, results))
             for i in range(workers)]
    for p in procs:
        p.start()
    got = collect(procs, results)
    done = sum(g[1] for g in got)
    wall = max(g[3] for g in got) - min(g[2] for g in got)
    with psycopg.connect(url) as conn:
        left = conn.execute("SELECT count(*) FROM pgqueuer WHERE status = 'queued'").fetchone()[0]
    assert left > 0 and done <= n - left, (done, n, left)  # the queue never ran dry
    return {"jobs": done, "seconds": wall, "rate": done / wall}


@contextmanager
def disk(flush_ms: float | None) -> Iterator[tuple[float, str]]:
    """(durable commit ms, label) of the server the runs use: the machine's own
    (DATABASE_URL or 127.0.0.1:5432) or a private one with a slow flush, made the admin
    server of fresh_database for the while."""
    if flush_ms is None:
        yield durable_commit_ms(admin_url()), "this machine's disk"
        return
    saved = os.environ.get("DATABASE_URL")
    with slow_disk_server(flush_ms) as (url, commit_ms):
        os.environ["DATABASE_URL"] = url
        try:
            yield commit_ms, f"flush +{flush_ms:g} ms"
        finally:
            if saved is None:
                os.environ.pop("DATABASE_URL", None)
            else:
                os.environ["DATABASE_URL"] = saved


def one_run(name: str, batch: int | None | str, n: int, w: int, duration: float,
            trees: dict[str, str]) -> tuple[dict[str, float], float, str]:
    if batch is None or batch in ("nonotify", "baseline", "baseline-nonotify"):
        with fresh_database("tput") as url:
            load_s = runner_load(url, n)
            if batch in ("nonotify", "baseline-nonotify"):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("ALTER TABLE jobs DISABLE TRIGGER runner_jobs_status_changed")
            before = loadavg()
            return runner_drain(url, n, w, duration, trees.get(name)), load_s, before
    with fresh_database("pgq", migrate=False) as url:
        pgq_install(url)
        load_s = pgq_load(url, n)
        before = loadavg()
        return pgq_drain(url, n, w, batch, duration), load_s, before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run of 10 000 jobs")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--duration", type=float, default=None, help="seconds of claiming per run")
    ap.add_argument("--no-pgqueuer", action="store_true")
    ap.add_argument("--baseline", metavar="REV", help="add runner's Queue as of this git revision "
                                                      "(`git archive` of its runner/), same schema")
    ap.add_argument("--flush-ms", type=float, action="append", metavar="MS",
                    help="run on a private PostgreSQL whose disk flush waits MS more "
                         "(benchmarks/slow_disk.py); repeat for several disks")
    ap.add_argument("--main-server", action="store_true",
                    help="with --flush-ms: run on the machine's own server too (the default without it)")
    ap.add_argument("--notify-experiment", action="store_true",
                    help="add a runner variant with the status-change NOTIFY trigger disabled "
                         "(not the shipped schema) to show what NOTIFY at commit costs")
    args = ap.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    n = args.jobs or (10_000 if args.quick else 100_000)
    args.duration = args.duration or (10.0 if args.quick else 30.0)
    w = args.workers

    print_header("Claim throughput", ["benchmarks/claim_throughput.py", *sys.argv[1:]])
    variants: list[tuple[str, int | None | str]] = [
        ("runner Queue (claim + finish, 1 job per claim)", None)]
    trees: dict[str, str] = {}
    if args.baseline:
        import tempfile
        exported = export_runner(args.baseline, Path(tempfile.mkdtemp(prefix="tput-baseline-")))
        name = f"runner Queue at {args.baseline} (baseline, same schema)"
        variants.append((name, "baseline"))
        trees[name] = exported
    if args.notify_experiment:
        variants.append(("runner Queue, EXPERIMENT: status-change NOTIFY trigger disabled", "nonotify"))
        if args.baseline:  # what the baseline would do if announcing cost nothing
            name = f"runner Queue at {args.baseline}, EXPERIMENT: status-change NOTIFY trigger disabled"
            variants.append((name, "baseline-nonotify"))
            trees[name] = exported
    if not args.no_pgqueuer:
        try:
            import pgqueuer  # noqa: F401
        except ImportError:
            sys.exit("pgqueuer is not installed in this interpreter: run with benchmarks/.venv/bin/python "
                     "(see benchmarks/requirements.txt), or pass --no-pgqueuer")
        variants += [("pgqueuer, asyncpg, batch_size=1", 1), ("pgqueuer, asyncpg, batch_size=10 (default)", 10)]
    disks: list[float | None] = ([None] if args.main_server or not args.flush_ms else []) + (args.flush_ms or [])
    rows: dict[str, list[list[object]]] = {}
    for flush_ms in disks:
        with disk(flush_ms) as (commit_ms, label):
            print(f"{label}: a durable commit takes {commit_ms:.2f} ms", file=sys.stderr, flush=True)
            for r in range(runs):
                for name, batch in variants:
                    res, load_s, before = one_run(name, batch, n, w, args.duration, trees)
                    rows.setdefault(f"{label}|{name}", []).append(
                        [name, label, f"{commit_ms:.2f}", r + 1, before, n, w, round(load_s, 2),
                         round(res["seconds"], 2), res["jobs"], round(res["rate"]), loadavg()])
                    print(f"run {r + 1}: {label}: {name}: {res['rate']:.0f} jobs/s", file=sys.stderr, flush=True)

    out = runs_with_median_marked(list(rows.values()), value=10, run=3)
    print(f"{w} concurrent claimer processes for {args.duration:g} s each over a {n:,}-deep queue "
          f"(it never runs dry); enqueue = time to put "
          f"the {n:,} jobs in (runner: one INSERT … SELECT generate_series with triggers; "
          "pgqueuer: its batched enqueue).\n")
    print(table(["queue", "disk", "durable commit ms", "run", "load before", "queue depth", "processes", "enqueue s",
                 "claiming s", "jobs done", "jobs/s", "load after"], out))


if __name__ == "__main__":
    main()
