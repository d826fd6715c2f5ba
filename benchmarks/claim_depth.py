"""Single claim time against queue depth (1k, 100k, 1M queued rows), and the claim's plan.

    python benchmarks/claim_depth.py [--quick] [--runs N] [--claims N]

For each depth: a fresh migrated database; the rows bulk-inserted with one
``INSERT … SELECT generate_series`` (``session_replication_role = replica`` for the load
only, so the per-row NOTIFY trigger does not turn a 1M-row load into 1M notifications and
1M ``enqueued`` events — the claim does not read either); VACUUM ANALYZE. Then N rounds
of 10 warm-up + 200 claims by one ``Queue.claim`` each (timed with perf_counter around
the call: one round trip on loopback), each followed by ``Queue.finish`` so the queue
keeps its shape. Finally EXPLAIN (ANALYZE, BUFFERS) of the claim statement at the largest
depth, inside a transaction that is rolled back. ``--quick`` skips 1M.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, loadavg, median, median_index, pct, print_header, table  # noqa: E402

import psycopg  # noqa: E402

from runner.queue import Queue, queries  # noqa: E402

WARMUP = 10


def load(url: str, n: int) -> float:
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                """INSERT INTO jobs (prompt, config, created_at)
                   SELECT 'bench ' || g, '{"agent": "command"}'::jsonb,
                          now() - (%(n)s - g) * interval '1 millisecond'
                   FROM generate_series(1, %(n)s) AS g""", {"n": n})
        elapsed = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE jobs")
    return elapsed


def claims(url: str, n: int) -> list[float]:
    out = []
    with Queue.open(url, "bench-depth") as q:
        for i in range(n + WARMUP):
            t0 = time.perf_counter()
            claim = q.claim(["default"], 300)
            t1 = time.perf_counter()
            assert claim is not None
            q.finish(claim, "succeeded", result={})
            if i >= WARMUP:
                out.append(t1 - t0)
    return out


def explain(url: str) -> str:
    params = {"queues": ["default"], "worker_id": "bench-explain", "pid": 0, "lease_seconds": 300}
    with psycopg.connect(url) as conn:  # not autocommit: rolled back below
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + queries()["claim"], params).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def sizes(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT pg_size_pretty(pg_table_size('jobs')),
                      pg_size_pretty(pg_relation_size('jobs_queued_claim_order'))""").fetchone()
    return f"table {row[0]}, claim index {row[1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip 1M; 1 round")
    ap.add_argument("--runs", type=int, default=None, help="rounds of claims per depth")
    ap.add_argument("--claims", type=int, default=200)
    args = ap.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    depths = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]

    print_header("Claim time vs queue depth", ["benchmarks/claim_depth.py", *sys.argv[1:]])
    rows, plan = [], ""
    for depth in depths:
        with fresh_database(f"depth{depth}") as url:
            load_s = load(url, depth)
            size = sizes(url)
            rounds = []
            for r in range(runs):
                before = loadavg()
                t = claims(url, args.claims)
                rounds.append([f"{depth:,}", r + 1, before, len(t), median(t) * 1000,
                               pct(t, 99) * 1000, max(t) * 1000, round(load_s, 1), size, loadavg()])
            mid = median_index([row[4] for row in rounds])
            for i, row in enumerate(rounds):
                row[1] = f"{row[1]}{' (median)' if i == mid else ''}"
            rows += rounds
            if depth == depths[-1]:
                plan = explain(url)
        print(f"depth {depth:,} done", file=sys.stderr, flush=True)

    print(f"One `Queue.claim` (one statement, one round trip, autocommit), each followed by "
          f"`finish`; {args.claims} claims per round after {WARMUP} warm-up; milliseconds.\n")
    print(table(["queued rows", "round", "load before", "claims", "median", "p99", "max",
                 "load s", "size", "load after"], rows))
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the claim at {depths[-1]:,} queued rows "
          f"(after the rounds above; rolled back):\n")
    print("```\n" + plan + "\n```")


if __name__ == "__main__":
    main()
