"""Claim time with concurrency keys: 1M queued rows over 10k keys, against the same depth
without keys, and a worst case; plus the claim's plan.

    python benchmarks/claim_keys.py [--rows N] [--keys N] [--claims N] [--busy N]
                                    [--baseline REV] [--inserts N]

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

``--baseline REV``: the claim statement of ``runner/sql/queries.sql`` at REV runs too, on the
same databases (this branch's schema and triggers), alternating with this branch's claim
one claim each; its EXPLAIN (ANALYZE, BUFFERS) is printed next to ours. With it, also the
enqueue's cost: ``--inserts`` single-row keyed INSERTs (autocommit, synchronous_commit off
so the WAL flush does not hide the triggers) into a database migrated to REV's schema and
one migrated to this branch's, both preloaded with 100 000 queued rows over the keys,
alternating in batches of 500.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, loadavg, median, pct, print_header, table  # noqa: E402

import psycopg  # noqa: E402

from psycopg.rows import dict_row  # noqa: E402

from runner.queue import Queue, queries  # noqa: E402

STATEMENT_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)  # as runner/queue.py splits the file

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
            if has_key_heads(conn):  # what the trigger (off for the load) would have flagged
                conn.execute("""UPDATE jobs SET key_head = true
                                WHERE id IN (SELECT DISTINCT ON (concurrency_key) id FROM jobs
                                             WHERE status = 'queued' AND concurrency_key IS NOT NULL
                                             ORDER BY concurrency_key, enqueue_seq)""")
        elapsed = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("VACUUM ANALYZE concurrency_keys")
    return elapsed


def has_key_heads(conn) -> bool:
    return conn.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'jobs' "
                        "AND column_name = 'key_head'").fetchone() is not None


def statements_at(rev: str) -> dict[str, str]:
    """runner/sql/queries.sql as of a git revision, by name."""
    text = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "show",
                           f"{rev}:runner/sql/queries.sql"], check=True, capture_output=True,
                          text=True).stdout
    parts = STATEMENT_NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}


class BaselineQueue(Queue):
    """Queue whose claim is another revision's statement (everything else is ours)."""

    claim_sql = ""

    def _claim_statement(self, **params):
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self.claim_sql, params)
            return cur.fetchall()[0]


def claims(url: str, n: int, busy: int, keys: int | None, long_first: bool,
           baseline_sql: str | None) -> dict[str, list[float]]:
    """Timed claims per variant ("ours", and "baseline" alternating with it)."""
    times: dict[str, list[float]] = {"ours": []}
    held: deque = deque()
    with Queue.open(url, "bench-keys") as q, BaselineQueue.open(url, "bench-keys-base") as base:
        variants = [("ours", q)]
        if baseline_sql is not None:
            base.claim_sql = baseline_sql
            variants.append(("baseline", base))
            times["baseline"] = []
        if long_first:  # k0's oldest job stays claimed: its other rows cannot be taken
            assert q.claim(["default"], 3600).job["concurrency_key"] == "k0"
        for i in range(n + WARMUP):
            for name, claimer in variants:
                t0 = time.perf_counter()
                claim = claimer.claim(["default"], 3600)
                t1 = time.perf_counter()
                assert claim is not None
                if i >= WARMUP:
                    times[name].append(t1 - t0)
                held.append(claim)
                while len(held) > busy:
                    q.finish(held.popleft(), "succeeded", result={})
                key = None if keys is None else f"k{random.randrange(keys)}"
                q.enqueue(prompt="refill", config={"agent": "command"}, concurrency_key=key)
    return times


def explain(url: str, statement: str) -> str:
    params = {"queues": ["default"], "worker_id": "bench-explain", "pid": 0,
              "lease_seconds": 300, "limits": "{}", "default_agent": "claude"}
    with psycopg.connect(url) as conn:  # rolled back below
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def migrated_to_revision_of(rev: str) -> str:
    """The newest migration in REV's alembic/versions (the schema that revision ships)."""
    root = Path(__file__).resolve().parents[1]
    names = subprocess.run(["git", "-C", str(root), "ls-tree", "--name-only", f"{rev}:alembic/versions"],
                           check=True, capture_output=True, text=True).stdout.split()
    newest = sorted(n for n in names if n.endswith(".py") and n[:4].isdigit())[-1]
    text = subprocess.run(["git", "-C", str(root), "show", f"{rev}:alembic/versions/{newest}"],
                          check=True, capture_output=True, text=True).stdout
    return next(line.split("=", 1)[1].strip().strip('"') for line in text.splitlines()
                if line.startswith("revision ="))


def enqueue_cost(rev: str, inserts: int, keys: int) -> tuple[list[list[object]], dict[str, str]]:
    """Single-row keyed INSERTs into REV's schema and ours, alternating batches."""
    from runner.migrate import upgrade

    batch, preload = 500, 100_000
    with fresh_database("enq_base", migrate=False) as base_url, fresh_database("enq") as url:
        upgrade(base_url, migrated_to_revision_of(rev))
        for u in (base_url, url):
            load(u, preload, keys, False)
        times: dict[str, list[float]] = {"baseline": [], "ours": []}
        loads: dict[str, list[str]] = {"baseline": [], "ours": []}
        plans: dict[str, str] = {}
        conns = {name: psycopg.connect(u, autocommit=True) for name, u in
                 (("baseline", base_url), ("ours", url))}
        try:
            for c in conns.values():
                c.execute("SET synchronous_commit = off")
            for b in range(inserts // batch):
                for name in (("baseline", "ours") if b % 2 == 0 else ("ours", "baseline")):
                    loads[name].append(loadavg())
                    conn = conns[name]
                    for _ in range(batch):
                        key = f"k{random.randrange(keys)}"
                        t0 = time.perf_counter()
                        conn.execute("INSERT INTO jobs (prompt, concurrency_key) VALUES ('e', %s)", (key,))
                        times[name].append(time.perf_counter() - t0)
            # a load-independent figure: one INSERT's buffers and triggers (rolled back)
            for name, conn in conns.items():
                with conn.transaction(force_rollback=True):
                    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) INSERT INTO jobs (prompt, concurrency_key) "
                                        "VALUES ('e', 'k1')").fetchall()
                plans[name] = "\n".join(r[0] for r in plan)
        finally:
            for c in conns.values():
                c.close()
    rows = []
    for name in ("baseline", "ours"):
        t = times[name]
        label = f"schema at {rev} (baseline)" if name == "baseline" else "this branch (key_head trigger)"
        rows.append([label, len(t), f"{1000 * median(t):.3f}", f"{1000 * pct(t, 99):.3f}",
                     f"{sum(t):.2f}", loads[name][0], loads[name][-1]])
    ratio = median(times["ours"]) / median(times["baseline"])
    rows.append(["ours / baseline (median)", "", f"{ratio:.2f}×", "", "", "", ""])
    return rows, plans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--claims", type=int, default=200)
    ap.add_argument("--busy", type=int, default=8)
    ap.add_argument("--baseline", metavar="REV",
                    help="also run the claim statement of this git revision, alternating, on the "
                         "same databases; and time keyed INSERTs on its schema against ours")
    ap.add_argument("--inserts", type=int, default=10_000)
    args = ap.parse_args()
    baseline_sql = statements_at(args.baseline)["claim"] if args.baseline else None
    print_header("Claim time with concurrency keys", ["benchmarks/claim_keys.py", *sys.argv[1:]])
    scenarios = [("no keys", None, False), (f"{args.keys:,} keys", args.keys, False),
                 (f"{args.keys:,} keys, one long key first", args.keys, True)]
    rows, plans = [], {}
    for name, keys, long_first in scenarios:
        with fresh_database("keys") as url:
            load_s = load(url, args.rows, keys, long_first)
            print(f"{name}: loaded", file=sys.stderr, flush=True)
            before = loadavg()
            times = claims(url, args.claims, args.busy, keys, long_first, baseline_sql)
            after = loadavg()
            for variant, t in times.items():
                label = name if variant == "ours" else f"{name}: claim at {args.baseline}"
                ms = [1000 * x for x in (median(t), pct(t, 99), max(t))]
                ratio = "" if variant == "ours" else f"{median(times['ours']) / median(t):.2f}×"
                rows.append([label, f"{args.rows:,}", args.busy, before, len(t),
                             *[f"{m:.2f}" for m in ms], ratio, round(load_s, 1), after])
            if keys is not None:
                plans[name] = explain(url, queries()["claim"])
                if baseline_sql is not None:
                    plans[f"{name}, the claim at {args.baseline}"] = explain(url, baseline_sql)
    print(f"One `Queue.claim` each (autocommit), with {args.busy} jobs held claimed "
          f"({args.claims} after {WARMUP} warm-up); milliseconds. With --baseline the two "
          "statements alternate, one claim each; ratio = our median / the baseline's.\n")
    print(table(["scenario", "queued rows", "busy", "load before", "claims", "claim median",
                 "claim p99", "claim max", "ours / baseline", "load s", "load after"], rows))
    if args.baseline:
        print(f"\nEnqueue: {args.inserts:,} single-row keyed INSERTs per schema (autocommit, "
              f"synchronous_commit off), 100,000 queued rows over {args.keys:,} keys first, "
              "batches of 500 alternating; milliseconds per INSERT.\n")
        enqueue_rows, insert_plans = enqueue_cost(args.baseline, args.inserts, args.keys)
        print(table(["schema", "inserts", "median", "p99", "total s", "load first batch",
                     "load last batch"], enqueue_rows))
        for name, plan in insert_plans.items():
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) of one keyed INSERT, {name} schema (rolled back):\n")
            print("```\n" + plan + "\n```")
    for name, plan in plans.items():
        print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the claim, {name} (rolled back):\n")
        print("```\n" + plan + "\n```")


if __name__ == "__main__":
    main()
