"""A fleet of waiting workers on a PostgreSQL with max_connections = 100: how many can wait
(LISTEN) at once, and are they all woken?

    python benchmarks/fleet.py [--workers 90] [--baseline GIT_REV] [--port 5499]

Starts a private PostgreSQL cluster (initdb in a temp dir, run as the `postgres` user, on
its own port and socket dir, max_connections = 100; the machine's main cluster is not
touched), migrates a database, then starts N ``python -m runner.one_job`` processes with
RUNNER_WAIT_SECONDS=600 and RUNNER_POLL_SECONDS=600 (each its own worker id and state
dir). After they settle it counts, from pg_stat_activity, the connections per
application name and the workers that LISTEN; then it enqueues one job per listening
worker (the ``command`` agent, ``true``) and counts the jobs that succeed and the workers
that ended with exit 0 (BATCH jobs at a time, so running jobs' heartbeat connections fit). ``--baseline`` runs the same fleet from a git revision's
``runner/`` (``git archive``) for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Cluster, export_runner, loadavg, print_header, runner_env, table  # noqa: E402

import psycopg  # noqa: E402


BATCH = 5


def fleet(url: str, n: int, src: Path, root: Path, settle: float) -> dict[str, object]:
    from runner.migrate import upgrade
    from runner.queue import Queue

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE fleet")
    db = url.rsplit("/", 1)[0] + "/fleet"
    upgrade(db)
    # The benchmark's own two connections first: a fleet that fills the server must not
    # lock the benchmark out.
    admin = psycopg.connect(db, autocommit=True)
    q = Queue.open(db, "fleet-enqueuer")
    procs = []
    for i in range(n):
        env = runner_env(db, root / f"w{i}", RUNNER_WORKER_ID=f"fleet-{i}",
                         RUNNER_WAIT_SECONDS="600", RUNNER_POLL_SECONDS="600",
                         RUNNER_AGENT_COMMAND="true", PYTHONPATH=str(src))
        log = open(root / f"w{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "runner.one_job"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=root), log))
    # Wait until all N listen, or (after 2 minutes of start-up: 90 interpreters on 2 cores)
    # until the count of listening workers has not moved for `settle` seconds.
    started = time.monotonic()
    last, still_since, deadline = -1, started, started + 600
    while time.monotonic() < deadline and last < n:
        listening = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'runner:listen:%' "
            "AND query <> ''").fetchone()[0]
        if listening != last:
            last, still_since = listening, time.monotonic()
        elif time.monotonic() - still_since >= settle and time.monotonic() - started > 120:
            break
        time.sleep(0.5)
    per_name = Counter(r[0].split(":")[1] for r in admin.execute(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'runner:%'"))
    total = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()[0]
    # One job per listening worker, BATCH at a time: a running job adds its heartbeat
    # connection, and 90 at once would not fit in the 10 connections left.
    jobs, done = 0, 0
    with q:
        deadline = time.monotonic() + 600
        while jobs < last and time.monotonic() < deadline:
            for _ in range(min(BATCH, last - jobs)):
                q.enqueue(prompt=f"fleet {jobs}", config={"agent": "command"})
                jobs += 1
            while time.monotonic() < deadline:
                done = admin.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0]
                if done >= jobs:
                    break
                time.sleep(0.2)
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
        exits = Counter()
        for p, log in procs:
            try:
                exits[p.wait(30)] += 1
            except subprocess.TimeoutExpired:
                p.kill()
                exits["killed"] += 1
            log.close()
    admin.close()
    refused = sum("too many clients" in (root / f"w{i}.log").read_text() for i in range(n))
    return {"listening": last, "connections": dict(per_name), "client backends": total,
            "jobs": jobs, "succeeded": done, "exits": dict(exits), "refused": refused}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=90)
    ap.add_argument("--baseline", action="append", default=[], metavar="REV")
    ap.add_argument("--port", type=int, default=5499)
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds without a new listener before counting")
    args = ap.parse_args()
    print_header(f"Fleet: {args.workers} waiting workers on max_connections = 100", sys.argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="runner-fleet-") as tmp:
        os.chmod(tmp, 0o755)  # the postgres user must reach its data dir inside
        variants = [("this checkout", REPO)] + [
            (f"runner at {rev}", Path(export_runner(rev, Path(tmp) / f"src-{rev}"))) for rev in args.baseline]
        for k, (label, src) in enumerate(variants):
            root = Path(tmp) / f"run{k}"
            root.mkdir()
            before = loadavg()
            cluster = Cluster(root / "pg", args.port)
            try:
                got = fleet(cluster.url, args.workers, src, root, args.settle)
            finally:
                cluster.stop()
            rows.append([label, before, args.workers, got["listening"], got["client backends"],
                         ", ".join(f"{k} {v}" for k, v in sorted(got["connections"].items())),
                         got["refused"], f"{got['succeeded']}/{got['jobs']}",
                         ", ".join(f"{k}: {v}" for k, v in got["exits"].items()), loadavg()])
            print(f"  {label}: {got}", file=sys.stderr, flush=True)
    print(table(["runner", "load before", "workers started", "workers listening",
                 "client connections", "runner connections by purpose",
                 "workers refused (too many clients)", "jobs succeeded / enqueued",
                 "exit codes", "load after"], rows))


if __name__ == "__main__":
    main()
