"""CPU per claim + finish, the backend's and the client's, in one process.

    python benchmarks/claim_cpu.py [--quick] [--jobs 2500] [--runs 3] [--baseline REV ...]
                                   [--experiment no_outbox|no_notify|keys_when ...]

On a 2-core machine the 8 claimers of claim_throughput.py and their backends are
CPU-bound, and other work on the cores moves its jobs/s by ±30 %: CPU per job is the
steadier figure. Each measurement: a fresh migrated database with ``--jobs`` + 300 queued
jobs (the throughput benchmark's INSERT, VACUUM ANALYZE), then one child process that
claims and finishes 300 of them (warm: plans, psycopg's prepared statements) and then
``--jobs`` more, counting its own ``process_time`` and its backend's user + system time
from ``/proc/<pid>/stat`` over the counted jobs. Variants run interleaved, ``--runs``
times each; medians printed.

* this tree; ``--baseline REV``: that revision's runner/ (``git archive``), same schema;
* ``--experiment``: this tree with a trigger changed on the benchmark database only —
  ``no_outbox`` (runner_jobs_finished_outbox disabled), ``no_notify``
  (runner_jobs_status_changed disabled), ``keys_when`` (the two concurrency-key triggers
  that fire on every status change skip jobs without a key, by a WHEN clause).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, export_runner, fresh_database, loadavg, print_header  # noqa: E402

import psycopg  # noqa: E402

WARM = 300
EXPERIMENTS = {
    "no_outbox": "ALTER TABLE jobs DISABLE TRIGGER runner_jobs_finished_outbox",
    "no_notify": "ALTER TABLE jobs DISABLE TRIGGER runner_jobs_status_changed",
    "keys_when": """
        DROP TRIGGER runner_jobs_key_head ON jobs;
        CREATE TRIGGER runner_jobs_key_head BEFORE INSERT OR UPDATE OF status, concurrency_key ON jobs
            FOR EACH ROW WHEN (NEW.concurrency_key IS NOT NULL OR NEW.key_head)
            EXECUTE FUNCTION runner_jobs_key_head();
        DROP TRIGGER runner_jobs_concurrency_changed ON jobs;
        CREATE TRIGGER runner_jobs_concurrency_changed AFTER UPDATE OF status, concurrency_key ON jobs
            FOR EACH ROW WHEN ((OLD.status IS DISTINCT FROM NEW.status
                                OR OLD.concurrency_key IS DISTINCT FROM NEW.concurrency_key)
                               AND (OLD.concurrency_key IS NOT NULL OR NEW.concurrency_key IS NOT NULL))
            EXECUTE FUNCTION runner_jobs_concurrency_count();""",
}

# The child: the runner of PYTHONPATH's first entry (this tree or a baseline's).
CHILD = """
import os, sys, time
from runner.queue import Queue
url, warm, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tick = os.sysconf("SC_CLK_TCK")
def backend_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick
q = Queue.open(url, "bench-cpu")
pid = q.conn.info.backend_pid
def loop(n):
    for _ in range(n):
        q.finish(q.claim(["default"], 300), "succeeded", result={})
loop(warm)
b0, c0 = backend_cpu(pid), time.process_time()
loop(jobs)
print(backend_cpu(pid) - b0, time.process_time() - c0)
"""


def measure(url: str, jobs: int, pythonpath: str) -> tuple[float, float]:
    """Backend and client CPU in ms per claim + finish."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    out = subprocess.run([sys.executable, "-c", CHILD, url, str(WARM), str(jobs)], env=env,
                         capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    backend, client = map(float, out.stdout.split())
    return backend * 1000 / jobs, client * 1000 / jobs


def load_jobs(url: str, n: int, experiment: str | None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO jobs (prompt, config, created_at)
               SELECT 'bench ' || g, '{"agent": "command"}'::jsonb,
                      now() - (%(n)s - g) * interval '1 millisecond'
               FROM generate_series(1, %(n)s) AS g""", {"n": n})
        conn.execute("VACUUM ANALYZE jobs")
        if experiment:
            conn.execute(EXPERIMENTS[experiment])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", metavar="REV", action="append", default=[])
    ap.add_argument("--experiment", choices=sorted(EXPERIMENTS), action="append", default=[])
    ap.add_argument("--quick", action="store_true", help="500 jobs, one run: a smoke check")
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.runs = 500, 1
    print_header("Claim + finish: CPU per job", sys.argv)
    with tempfile.TemporaryDirectory() as tmp:
        variants: list[tuple[str, str, str | None]] = [("this tree", str(REPO), None)]
        variants += [(f"at {rev}", export_runner(rev, Path(tmp) / rev), None) for rev in args.baseline]
        variants += [(f"EXPERIMENT {name}", str(REPO), name) for name in args.experiment]
        results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
        for run in range(1, args.runs + 1):
            for name, path, experiment in variants:
                with fresh_database("cpu") as url:
                    load_jobs(url, args.jobs + WARM, experiment)
                    backend, client = measure(url, args.jobs, path)
                results[name].append((backend, client))
                print(f"run {run}: {name}: backend {backend:.3f} ms, client {client:.3f} ms "
                      f"per job (load {loadavg()})", flush=True)
    print("\n| runner | backend ms/job | client ms/job | total | runs (backend + client) |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        b = statistics.median(r[0] for r in rows)
        c = statistics.median(r[1] for r in rows)
        t = statistics.median(r[0] + r[1] for r in rows)
        runs = " / ".join(f"{r[0]:.2f} + {r[1]:.2f}" for r in rows)
        print(f"| {name} | {b:.3f} | {c:.3f} | {t:.3f} | {runs} |")


if __name__ == "__main__":
    main()
