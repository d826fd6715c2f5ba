"""Single claim time against queue depth (1k, 100k, 1M queued rows), and the claim's plan.

    python benchmarks/claim_depth.py [--quick] [--runs N] [--claims N]

For each depth: a fresh migrated database; the rows bulk-inserted with one
``INSERT … SELECT generate_series`` (``session_replication_role = replica`` for the load
only, so the per-row NOTIFY trigger does not turn a 1M-row load into 1M notifications and
1M ``enqueued`` events — the claim does not read either); VACUUM ANALYZE. All depths are
loaded first, then N rounds go over the depths in turn (so drift in the shared machine's
load hits them alike). A round is 10 warm-up + 200 claims by one ``Queue.claim`` each
(timed with perf_counter around the call: one round trip on loopback, autocommit — the
shipped path), interleaved with 200 more inside BEGIN … COMMIT that time the statement
apart from its commit; each claim is followed by ``Queue.finish`` and one new ``Queue.enqueue`` so the
queue keeps its depth (untimed). Finally EXPLAIN (ANALYZE, BUFFERS) of the claim statement at the largest
depth, inside a transaction that is rolled back. ``--quick`` skips 1M.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
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


def claims(url: str, n: int) -> tuple[list[float], list[float], list[float]]:
    """n autocommit claims (the shipped path) interleaved with n claims inside an explicit
    transaction, which time the statement apart from its COMMIT (the WAL flush)."""
    real, stmt, commit = [], [], []
    with Queue.open(url, "bench-depth") as q:
        for i in range(2 * (n + WARMUP)):
            if i % 2 == 0:
                t0 = time.perf_counter()
                claim = q.claim(["default"], 300)
                t1 = time.perf_counter()
                if i >= 2 * WARMUP:
                    real.append(t1 - t0)
            else:
                with q.conn.transaction():
                    t0 = time.perf_counter()
                    claim = q.claim(["default"], 300)
                    t1 = time.perf_counter()
                t2 = time.perf_counter()
                if i >= 2 * WARMUP:
                    stmt.append(t1 - t0)
                    commit.append(t2 - t1)
            assert claim is not None
            q.finish(claim, "succeeded", result={})
            q.enqueue(prompt="refill", config={"agent": "command"})  # depth stays constant
    return real, stmt, commit


def explain(url: str) -> str:
    params = {"queues": ["default"], "worker_id": "bench-explain", "pid": 0, "lease_seconds": 300,
              "limits": "{}", "default_agent": "claude"}
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
    with ExitStack() as stack:
        dbs = {}
        for depth in depths:  # all depths loaded first; rounds interleave them (less drift)
            url = stack.enter_context(fresh_database(f"depth{depth}"))
            dbs[depth] = (url, load(url, depth), sizes(url))
            print(f"depth {depth:,} loaded", file=sys.stderr, flush=True)
        per: dict[int, list[list[object]]] = {d: [] for d in depths}
        for r in range(runs):
            for depth in depths:
                url, load_s, size = dbs[depth]
                before = loadavg()
                real, stmt, commit = claims(url, args.claims)
                ms = [1000 * x for x in (median(real), pct(real, 99), max(real), median(stmt),
                                         pct(stmt, 99), median(commit))]
                per[depth].append([f"{depth:,}", r + 1, before, len(real), *ms,
                                   round(load_s, 1), size, loadavg()])
        plan = explain(dbs[depths[-1]][0])
    rows = []
    for depth in depths:
        mid = median_index([row[4] for row in per[depth]])
        for i, row in enumerate(per[depth]):
            row[1] = f"{row[1]}{' (median)' if i == mid else ''}"
        rows += per[depth]

    print(f"One `Queue.claim` (one statement, one round trip, autocommit — the shipped path), "
          f"each followed by `finish`; {args.claims} per round after {WARMUP} warm-up; "
          f"interleaved with as many claims inside BEGIN … COMMIT, which time the statement "
          f"without its WAL flush; milliseconds.\n")
    print(table(["queued rows", "round", "load before", "claims", "claim median", "claim p99",
                 "claim max", "statement median", "statement p99", "COMMIT median",
                 "load s", "size", "load after"], rows))
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the claim at {depths[-1]:,} queued rows "
          f"(after the rounds above; rolled back):\n")
    print("```\n" + plan + "\n```")


if __name__ == "__main__":
    main()
