"""Round trips per job of one worker's claim → finish loop: the messages its client sends
(``sendto`` system calls under strace: libpq sends one per round trip), a count the load of
a shared machine does not change.

    python benchmarks/claim_round_trips.py [--jobs 1000] [--baseline REV]

A fresh migrated database (benchmarks/_common.py) with ``--jobs`` + 100 queued jobs; 100
claim → finish to warm up (psycopg prepares after five), then ``--jobs`` more, counted
between two markers the loop writes to stdout. ``--baseline REV``: the same with the Queue
of that revision (``git archive`` of its ``runner/``), same schema. Needs strace.
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
from _common import export_runner  # noqa: E402

LOOP = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from _common import fresh_database
from claim_throughput import runner_load
n, tree = int(sys.argv[2]), sys.argv[3]
with fresh_database("trips") as url:
    runner_load(url, n + 100)
    if tree:  # that revision's Queue, after the current migrations made the schema
        sys.path.insert(0, tree)
        for name in [m for m in sys.modules if m == "runner" or m.startswith("runner.")]:
            del sys.modules[name]
    from runner.queue import Queue
    with Queue.open(url, "bench-trips") as q:
        for i in range(100 + n):
            if i == 100:
                os.write(1, b"COUNT-START\n")
            claim = q.claim(["default"], 300)
            q.finish(claim, "succeeded", result={})
        os.write(1, b"COUNT-END\n")
"""


def round_trips(jobs: int, tree: str) -> float:
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as trace:
        subprocess.run(["strace", "-f", "-e", "trace=sendto,write", "-o", trace.name,
                        sys.executable, "-c", LOOP, str(HERE), str(jobs), tree],
                       check=True, stdout=subprocess.DEVNULL)
        counting, sent = False, 0
        for line in trace:
            if "COUNT-START" in line:
                counting = True
            elif "COUNT-END" in line:
                break
            elif counting and "sendto(" in line:
                sent += 1
    return sent / jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--baseline", metavar="REV")
    args = ap.parse_args()
    print(f"claim → finish, 1 worker, {args.jobs} jobs; load {os.getloadavg()[0]:.2f}")
    print(f"  this tree: {round_trips(args.jobs, ''):.2f} round trips per job")
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            tree = export_runner(args.baseline, Path(tmp))
            print(f"  {args.baseline}: {round_trips(args.jobs, tree):.2f} round trips per job")


if __name__ == "__main__":
    main()
