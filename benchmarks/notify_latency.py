"""Enqueue → claim latency through the real waiting code path, next to a raw NOTIFY round
trip measured in the same run; and enqueue → agent start through `python -m runner.one_job`.

    python benchmarks/notify_latency.py [--quick] [--runs N] [--jobs N] [--agent-jobs N]

* raw NOTIFY: a thread LISTENs on its own connection (psycopg ``notifies()``); the main
  thread sends ``pg_notify`` on another connection. Latency = perf_counter at receipt −
  perf_counter before the send.
* enqueue → claim: a waiter thread runs ``runner.one_job.claim_or_wait`` (requeue_expired +
  claim, Listener, ``runner.listen.wait_and_claim``) with RUNNER_POLL_SECONDS=600 so only a
  NOTIFY can wake it. When its first (empty) claim has returned, the main thread waits
  20 ms and enqueues with ``Queue.enqueue`` (the INSERT whose trigger sends the NOTIFY).
  Latency = perf_counter when ``Queue.claim`` returned the job − perf_counter before the
  enqueue. The waiter then finishes the job and waits again.
* enqueue → agent start: ``python -m runner.one_job`` (RUNNER_WAIT_SECONDS=600,
  RUNNER_POLL_SECONDS=600) is started and left until pg_stat_activity shows its LISTEN
  connection and its empty claim done; then a job is enqueued. The ``command`` agent is a
  tiny C program (Python fallback) that writes clock_gettime(CLOCK_MONOTONIC) at its start.
"""

from __future__ import annotations

import argparse
import os
import queue as stdqueue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    fresh_database, loadavg, median_index, monotonic, pct, print_header, runner_env, table,
)

import psycopg  # noqa: E402

import runner.one_job as one_job  # noqa: E402
from runner.listen import Listener  # noqa: E402
from runner.queue import Queue  # noqa: E402
from runner.settings import load_settings  # noqa: E402

WARMUP = 10


def ms(seconds: float) -> float:
    return seconds * 1000.0


# -- raw NOTIFY ------------------------------------------------------------------------

def raw_notify(url: str, n: int) -> list[float]:
    received: stdqueue.Queue[tuple[str, float]] = stdqueue.Queue()
    ready = threading.Event()

    def listen() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN bench_raw")
            ready.set()
            got = 0
            while got < n + WARMUP:
                for note in conn.notifies(timeout=1.0):
                    received.put((note.payload, time.perf_counter()))
                    got += 1
                    if got >= n + WARMUP:
                        break

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    ready.wait(10)
    out = []
    with psycopg.connect(url, autocommit=True) as sender:
        for i in range(n + WARMUP):
            time.sleep(0.005)
            t0 = time.perf_counter()
            sender.execute("SELECT pg_notify('bench_raw', %s)", [str(i)])
            payload, t1 = received.get(timeout=10)
            assert payload == str(i), (payload, i)
            if i >= WARMUP:
                out.append(t1 - t0)
    t.join(10)
    return out


# -- enqueue → claim through wait_and_claim -----------------------------------------------

def enqueue_to_claim(url: str, n: int) -> dict[str, list[float]]:
    ready = threading.Event()
    claimed_at: stdqueue.Queue[float] = stdqueue.Queue()
    notified_at: list[float] = []

    requeue_calls: list[float] = []
    claim_calls: list[float] = []

    class TimedQueue(Queue):
        def requeue_expired(self):  # type: ignore[override]
            t0 = time.perf_counter()
            out = super().requeue_expired()
            self.last_requeue = time.perf_counter() - t0
            return out

        def claim(self, queues, lease_seconds, *rest):  # type: ignore[override]
            t0 = time.perf_counter()
            found = super().claim(queues, lease_seconds, *rest)
            if found is None:
                ready.set()
            else:
                self.last_claim_at = time.perf_counter()
                claim_calls.append(self.last_claim_at - t0)
                requeue_calls.append(self.last_requeue)
            return found

    class TimedListener(Listener):
        def wait(self, seconds: float) -> bool:
            woke = super().wait(seconds)
            if woke:
                notified_at.append(time.perf_counter())
            return woke

    settings = load_settings(DATABASE_URL=url, wait_seconds=600, poll_seconds=600,
                             queues=["default"])
    assert settings.poll_seconds == 600 and settings.wait_seconds == 600
    stop = threading.Event()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            with TimedQueue.open(settings.dsn, "bench-waiter") as q:
                for _ in range(n + WARMUP):
                    claim = one_job.claim_or_wait(q, settings, stop)
                    assert claim is not None
                    claimed_at.put(q.last_claim_at)
                    q.finish(claim, "succeeded", result={})
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
            claimed_at.put(float("nan"))

    one_job.Listener = TimedListener  # instrumentation only: records NOTIFY receipt
    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    total, to_notify, enq_call = [], [], []
    with Queue.open(url, "bench-enqueuer") as producer:
        for i in range(n + WARMUP):
            if not ready.wait(30):
                raise RuntimeError(f"waiter not ready: {errors}")
            ready.clear()
            time.sleep(0.02)  # the waiter is now blocked in the Listener's notifies()
            before = len(notified_at)
            t0 = time.perf_counter()
            producer.enqueue(prompt=f"bench {i}", config={"agent": "command"})
            t_enq = time.perf_counter()
            t_claim = claimed_at.get(timeout=30)
            if errors:
                raise errors[0]
            if i >= WARMUP:
                total.append(t_claim - t0)
                enq_call.append(t_enq - t0)
                if len(notified_at) > before:
                    to_notify.append(notified_at[-1] - t0)
    t.join(10)
    one_job.Listener = Listener
    return {"total": total, "notify": to_notify, "enqueue_call": enq_call,
            "requeue_call": requeue_calls[WARMUP:], "claim_call": claim_calls[WARMUP:]}


# -- enqueue → agent start through python -m runner.one_job ------------------------------

STAMP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const char *id = getenv("RUNNER_JOB_ID");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argc > 1 ? argv[1] : ".", id ? id : "unknown");
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "%lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
    fclose(f);
    return 0;
}
"""

STAMP_PY = ("import os,sys,time;t=time.clock_gettime(time.CLOCK_MONOTONIC);"
            "open(os.path.join(sys.argv[1],os.environ['RUNNER_JOB_ID']),'w').write(repr(t))")


def stamp_command(tmp: Path) -> tuple[str, str]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        src = tmp / "stamp.c"
        src.write_text(STAMP_C)
        exe = tmp / "stamp"
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
        return str(exe), "C program"
    return f"{sys.executable} -S -I -c \"{STAMP_PY}\"", "python -S -I (no C compiler found)"


def wait_ready(admin: psycopg.Connection, worker_id: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"one_job exited early with {proc.returncode}")
        row = admin.execute(
            """SELECT
                 bool_or(application_name = %(l)s AND query <> ''),
                 bool_or(application_name = %(q)s AND state = 'idle'
                         AND position('WITH candidate' in query) > 0)
                 -- one connection (runner.listen.SharedListener): renamed with its LISTEN,
                 -- and its claim after the LISTEN ends in the pipeline's COMMIT
                 OR bool_or(application_name = %(l)s AND state = 'idle' AND query = 'COMMIT')
               FROM pg_stat_activity""",
            {"l": f"runner:listen:{worker_id}"[:63], "q": f"runner:queue:{worker_id}"[:63]},
        ).fetchone()
        if row[0] and row[1]:
            return
        time.sleep(0.005)
    raise RuntimeError("one_job did not reach its wait in time")


def enqueue_to_agent(url: str, n: int, tmp: Path) -> tuple[list[float], list[float], str]:
    stamps = tmp / "stamps"
    stamps.mkdir()
    command, kind = stamp_command(tmp)
    out, walls = [], []
    with Queue.open(url, "bench-enqueuer") as producer, \
            psycopg.connect(url, autocommit=True) as admin:
        for i in range(n):
            wid = f"bench-agent-{i}"
            env = runner_env(url, tmp / "rt", RUNNER_WORKER_ID=wid, RUNNER_WAIT_SECONDS="600",
                             RUNNER_POLL_SECONDS="600",
                             RUNNER_AGENT_COMMAND=f"{command} {stamps}")
            p_start = monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "runner.one_job"], env=env,
                                    cwd=tmp, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            try:
                wait_ready(admin, wid, proc)
                time.sleep(0.02)
                t0 = monotonic()
                job = producer.enqueue(prompt=f"agent {i}", config={"agent": "command"})
                code = proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            walls.append(monotonic() - p_start)
            if code != 0:
                raise RuntimeError(f"one_job exited {code} for job {job['id']}")
            t_agent = float((stamps / str(job["id"])).read_text())
            out.append(t_agent - t0)
            status = producer.get(job["id"])["status"]
            assert status == "succeeded", status
    return out, walls, kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run, 50 jobs, 10 agent jobs")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--agent-jobs", type=int, default=None)
    ap.add_argument("--synchronous-commit", choices=["on", "off"], default="on",
                    help="experiment: ALTER DATABASE … SET synchronous_commit for the fresh "
                         "database, to show what the WAL flush costs (shipped config: on)")
    args = ap.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    jobs = args.jobs or (50 if args.quick else 200)
    agent_jobs = args.agent_jobs if args.agent_jobs is not None else (10 if args.quick else 50)

    print_header("Queue latency", ["benchmarks/notify_latency.py", *sys.argv[1:]])
    claim_rows, agent_rows = [], []
    for r in range(runs):
        with fresh_database("latency") as url, tempfile.TemporaryDirectory() as tmpd:
            if args.synchronous_commit != "on":
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} "
                                 f"SET synchronous_commit = {args.synchronous_commit}")
            load = loadavg()
            raw = raw_notify(url, jobs)
            res = enqueue_to_claim(url, jobs)
            tot, note = res["total"], res["notify"]
            claim_rows.append([r + 1, load, len(tot),
                               ms(pct(raw, 50)), ms(pct(raw, 95)), ms(pct(raw, 99)), ms(max(raw)),
                               ms(pct(tot, 50)), ms(pct(tot, 95)), ms(pct(tot, 99)), ms(max(tot)),
                               ms(pct(res["enqueue_call"], 50)),
                               ms(pct(note, 50)) if note else float("nan"),
                               ms(pct(res["requeue_call"], 50)), ms(pct(res["claim_call"], 50)),
                               loadavg()])
            if agent_jobs:
                load = loadavg()
                agent, walls, kind = enqueue_to_agent(url, agent_jobs, Path(tmpd))
                agent_rows.append([r + 1, load, len(agent), ms(pct(agent, 50)), ms(pct(agent, 99)),
                                   ms(max(agent)), ms(pct(walls, 50)), kind, loadavg()])
        print(f"run {r + 1}/{runs} done", file=sys.stderr, flush=True)

    mid = median_index([row[7] for row in claim_rows])
    for i, row in enumerate(claim_rows):
        row[0] = f"{row[0]}{' (median)' if i == mid else ''}"
    print("Enqueue → claim through `wait_and_claim` (only NOTIFY can wake it), and the raw "
          "NOTIFY round trip in the same run; milliseconds.\n")
    print(table(["run", "load before", "n", "raw p50", "raw p95", "raw p99", "raw max",
                 "claim p50", "claim p95", "claim p99", "claim max", "enqueue() call p50",
                 "enqueue→NOTIFY seen p50", "requeue_expired() p50", "claim() p50",
                 "load after"], claim_rows))
    if agent_rows:
        mid = median_index([row[3] for row in agent_rows])
        for i, row in enumerate(agent_rows):
            row[0] = f"{row[0]}{' (median)' if i == mid else ''}"
        print("\nEnqueue → agent process start through `python -m runner.one_job` "
              "(already waiting); milliseconds.\n")
        print(table(["run", "load before", "n", "p50", "p99", "max",
                     "one_job wall p50 (start→exit)", "agent", "load after"], agent_rows))


if __name__ == "__main__":
    main()
