"""Claim time with concurrency keys: 1M queued rows over 10k keys, against the same depth
without keys, and a worst case; plus the claim's plan.

    python benchmarks/claim_keys.py [--rows N] [--keys N] [--claims N] [--busy N]

Each scenario gets a fresh migrated database, loaded with one ``INSERT … SELECT
generate_series`` (``session_replication_role = replica`` for the load only, so the per-row
triggers do not send 1M notifications; the ``concurrency_keys`` rows the trigger would have
made are inserted by the script), then VACUUM ANALYZE. Scenarios:

* ``no keys``: N queued rows without a concurrency key (the claim of claim_depth.py);
* ``keys``: N rows over K keys, round-robin in enqueue order (row g has key g mod K);
* ``one long key first``: as ``keys``, but the first 10 000 rows in claim order all belong
  to one key — the claim must walk past them while that key is busy.

A round keeps ``--busy`` jobs claimed at once (as that many workers running agents, so
that many keys are busy): each timed ``Queue.claim`` (one statement, autocommit, the shipped
path) is followed, untimed, by ``finish`` of the oldest held claim and one new enqueue with a
random key, so depth and busy keys stay constant. Milliseconds, timed with perf_counter.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, loadavg, median, pct, print_header, table  # noqa: E402

import psycopg  # noqa: E402

from runner.queue import Queue, queries  # noqa: E402

WARMUP = 10
LONG_KEY_ROWS = 10_000


def load(url: str, rows: int, keys: int | None, long_first: bool) -> float:
    t0 = time.perf_counter()
    key = "NULL" if keys is None else f"'k' || (g %% {keys})"
    if long_first:  # the first rows in claim order all on key k0
        key = f"CASE WHEN g <= {LONG_KEY_ROWS} THEN 'k0' ELSE 'k' || (g %% {keys}) END"
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                f"""INSERT INTO jobs (prompt, config, concurrency_key, created_at)
                    SELECT 'bench ' || g, '{{"agent": "command"}}'::jsonb, {key},
                           now() - (%(n)s - g) * interval '1 millisecond'
                    FROM generate_series(1, %(n)s) AS g""", {"n": rows})
            conn.execute("INSERT INTO concurrency_keys (key) SELECT DISTINCT concurrency_key "
                         "FROM jobs WHERE concurrency_key IS NOT NULL")
        elapsed = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("VACUUM ANALYZE concurrency_keys")
    return elapsed


def claims(url: str, n: int, busy: int, keys: int | None, long_first: bool) -> list[float]:
    times: list[float] = []
    held: deque = deque()
    with Queue.open(url, "bench-keys") as q:
        if long_first:  # k0's oldest job stays claimed: its other rows cannot be taken
            assert q.claim(["default"], 3600).job["concurrency_key"] == "k0"
        for i in range(n + WARMUP):
            t0 = time.perf_counter()
            claim = q.claim(["default"], 3600)
            t1 = time.perf_counter()
            assert claim is not None
            if i >= WARMUP:
                times.append(t1 - t0)
            held.append(claim)
            while len(held) > busy:
                q.finish(held.popleft(), "succeeded", result={})
            key = None if keys is None else f"k{random.randrange(keys)}"
            q.enqueue(prompt="refill", config={"agent": "command"}, concurrency_key=key)
    return times


def explain(url: str) -> str:
    params = {"queues": ["default"], "worker_id": "bench-explain", "pid": 0,
              "lease_seconds": 300, "limits": "{}", "default_agent": "claude"}
    with psycopg.connect(url) as conn:  # rolled back below
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + queries()["claim"], params).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--claims", type=int, default=200)
    ap.add_argument("--busy", type=int, default=8)
    args = ap.parse_args()
    print_header("Claim time with concurrency keys", ["benchmarks/claim_keys.py", *sys.argv[1:]])
    scenarios = [("no keys", None, False), (f"{args.keys:,} keys", args.keys, False),
                 (f"{args.keys:,} keys, one long key first", args.keys, True)]
    rows, plans = [], {}
    for name, keys, long_first in scenarios:
        with fresh_database("keys") as url:
            load_s = load(url, args.rows, keys, long_first)
            print(f"{name}: loaded", file=sys.stderr, flush=True)
            before = loadavg()
            times = claims(url, args.claims, args.busy, keys, long_first)
            ms = [1000 * x for x in (median(times), pct(times, 99), max(times))]
            rows.append([name, f"{args.rows:,}", args.busy, before, len(times),
                         *[f"{m:.2f}" for m in ms], round(load_s, 1), loadavg()])
            if keys is not None:
                plans[name] = explain(url)
    print(f"One `Queue.claim` each (autocommit), with {args.busy} jobs held claimed "
          f"({args.claims} after {WARMUP} warm-up); milliseconds.\n")
    print(table(["scenario", "queued rows", "busy", "load before", "claims", "claim median",
                 "claim p99", "claim max", "load s", "load after"], rows))
    for name, plan in plans.items():
        print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the claim, {name} (rolled back):\n")
        print("```\n" + plan + "\n```")


if __name__ == "__main__":
    main()
