"""The client's CPU per job of a claim → finish loop, as callgrind instructions (a count
the load of a shared machine does not change): psycopg, libpq and runner's Queue, not the
database.

    python benchmarks/claim_instructions.py [--jobs 300] [--baseline REV]

A fresh migrated database with ``--jobs`` + 100 queued jobs; one process, under
``valgrind --tool=callgrind --toggle-collect=map_next``: 20 claim → finish to warm up
(psycopg prepares after five), then ``--jobs`` more run by ``map()`` — callgrind counts
the instructions inside ``map_next`` only, so start-up and the warm-up are left out.
``--baseline REV``: the same with the Queue of that revision (``git archive`` of its
``runner/``), same schema. Needs valgrind.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import export_runner, fresh_database  # noqa: E402
from claim_throughput import runner_load  # noqa: E402

LOOP = r"""
import sys
if sys.argv[3]:
    sys.path.insert(0, sys.argv[3])
from runner.queue import Queue
with Queue.open(sys.argv[1], "bench-instructions") as q:
    def step(_):
        q.finish(q.claim(["default"], 300), "succeeded", result={})
    for i in range(20):
        step(i)
    list(map(step, range(int(sys.argv[2]))))  # counted: callgrind collects in map_next only
"""


def instructions_per_job(jobs: int, tree: str) -> float:
    with fresh_database("instr") as url, tempfile.TemporaryDirectory() as tmp:
        runner_load(url, jobs + 100)
        out = Path(tmp) / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no",
                        "--toggle-collect=map_next", f"--callgrind-out-file={out}",
                        sys.executable, "-c", LOOP, url, str(jobs), tree],
                       check=True, cwd=HERE.parent, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        total = next(int(line.split()[1]) for line in out.read_text().splitlines()
                     if line.startswith(("summary:", "totals:")))
    return total / jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--baseline", metavar="REV")
    args = ap.parse_args()
    print(f"claim → finish, 1 process, {args.jobs} jobs counted; load {os.getloadavg()[0]:.2f}")
    print(f"  this tree: {instructions_per_job(args.jobs, '') / 1e6:.3f} M instructions per job")
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            tree = export_runner(args.baseline, Path(tmp))
            print(f"  {args.baseline}: {instructions_per_job(args.jobs, tree) / 1e6:.3f} M instructions per job")


if __name__ == "__main__":
    main()
