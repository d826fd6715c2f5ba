"""`runner logs`: rendering a big job log, and how soon `-f` shows an appended line.

    python benchmarks/logs_view.py [--mb 100] [--runs 3] [--lines 50] [--baseline REV]
                                   [--shape repeated|long-run]

Builds a run log of ``--mb`` MB from the captured Claude Code stream of a tool-using run
(tests/fixtures/claude/success_write_tool.stdout.jsonl, repeated, with runner log lines
between), links it as a job's log, then, interleaved, ``--runs`` times each:

* ``runner logs ID > /dev/null`` — wall time and peak RSS (the child's ru_maxrss);
* the baseline: a python that ``json.loads`` every line of the same file;
* with ``--baseline REV``: ``runner logs ID`` of that git revision (``git archive`` of its
  ``runner/``), in the same interleaved runs.

Then ``runner logs -f ID`` with ``--lines`` lines appended one at a time (each a complete
stream-json event): the lag from the append to the rendered line on its stdout, p50/p95.
No database: DATABASE_URL is unset, so `-f` follows until it is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import export_runner  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "claude" / "success_write_tool.stdout.jsonl"
JOB_ID = "0b5e1c3a-1111-4222-8333-944455556666"
BASELINE = ("import json,sys\n"
            "for line in open(sys.argv[1], encoding='utf-8', errors='replace'):\n"
            "    line = line.strip()\n"
            "    if line.startswith('{'):\n"
            "        try: json.loads(line)\n"
            "        except ValueError: pass\n")


def build_log(root: Path, megabytes: int, shape: str = "repeated") -> Path:
    """``repeated``: the whole captured run (init, tool call, tool result, text, result)
    again and again, a runner line before each — init and result are a sixth of the lines
    each. ``long-run``: one run that goes on: init once, then the capture's tool call and
    tool result again and again (a runner line every 100 turns), its text and result once
    at the end — the shape of a real long job's log."""
    runs, jobs = root / "logs" / "runs", root / "logs" / "jobs"
    runs.mkdir(parents=True)
    jobs.mkdir()
    events = [line for line in FIXTURE.read_text().splitlines() if line.strip()]
    runner_line = json.dumps({"timestamp": "2026-12-02T18:00:00.000000Z", "level": "info",
                              "event": "heartbeat", "job_id": JOB_ID})
    if shape == "long-run":
        head, tail = "\n".join([runner_line, events[0]]) + "\n", "\n".join(events[3:]) + "\n"
        block = "\n".join([runner_line, *events[1:3] * 100]) + "\n"
    else:
        head, tail, block = "", "", "\n".join([runner_line, *events]) + "\n"
    path = runs / "20261202T180000Z-1.log"
    with open(path, "w") as fh:
        fh.write(head)
        written = len(head) + len(tail)
        while written < megabytes * 1_000_000:
            fh.write(block)
            written += len(block)
        fh.write(tail)
    (jobs / f"{JOB_ID}.log").symlink_to(f"../runs/{path.name}")
    return path


def measure_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system: less moved by other work on a shared
    machine than the wall time) and peak RSS in MiB of one run of argv."""
    code = ("import resource,subprocess,sys,time\n"
            "t=time.perf_counter()\n"
            "subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,check=True)\n"
            "r=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "print(time.perf_counter()-t, r.ru_utime+r.ru_stime, r.ru_maxrss/1024)\n")
    # cwd: not the checkout, so that `-m runner` finds the runner of env's PYTHONPATH.
    out = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                         text=True, check=True, cwd=tempfile.gettempdir()).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def follow_lag(env: dict[str, str], log: Path, lines: int) -> list[float]:
    proc = subprocess.Popen([sys.executable, "-m", "runner", "logs", "-f", JOB_ID], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    try:
        _read_until(proc, b"", timeout=30, quiet_for=1.0)  # the existing content
        lags = []
        with open(log, "a") as fh:
            for i in range(lines):
                marker = f"LAG-MARKER-{i}-{os.getpid()}"
                event = {"type": "assistant", "message": {"role": "assistant", "content": [
                    {"type": "text", "text": marker}]}}
                start = time.perf_counter()
                fh.write(json.dumps(event) + "\n")
                fh.flush()
                _read_until(proc, marker.encode(), timeout=10)
                lags.append((time.perf_counter() - start) * 1000)
                time.sleep(0.05)
        return lags
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _read_until(proc: subprocess.Popen, needle: bytes, timeout: float, quiet_for: float = 0) -> None:
    buf = b""
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1 << 20)
            buf = (buf + chunk)[-(1 << 16):]
            last = time.monotonic()
            if needle and needle in buf:
                return
        elif not needle and time.monotonic() - last >= quiet_for:
            return
    if needle:
        raise TimeoutError(f"{needle!r} not seen")




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lines", type=int, default=50)
    ap.add_argument("--baseline", metavar="REV", help="also measure runner logs of this git revision")
    ap.add_argument("--shape", choices=("repeated", "long-run"), default="repeated",
                    help="what the log holds (build_log)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        log = build_log(root, args.mb, args.shape)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "RUNNER_DATABASE_URL")}
        env.update({"RUNNER_LOG_DIR": str(root / "logs"), "PYTHONPATH": str(REPO)})
        size = log.stat().st_size / 1e6
        print(f"log of {size:.0f} MB, {args.shape} ({sum(1 for _ in open(log)):,} lines); load "
              f"{os.getloadavg()[0]:.2f}; {args.runs} interleaved runs each")
        commands = {"runner logs ID": [sys.executable, "-m", "runner", "logs", JOB_ID],
                    "json.loads of every line": [sys.executable, "-c", BASELINE, str(log)]}
        envs = {name: env for name in commands}
        if args.baseline:
            name = f"runner logs ID at {args.baseline}"
            commands[name] = commands["runner logs ID"]
            envs[name] = dict(env, PYTHONPATH=export_runner(args.baseline, root / "baseline"))
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                results[name].append(measure_once(argv, envs[name]))
        base = statistics.median(s for s, _, _ in results["json.loads of every line"])
        base_cpu = statistics.median(c for _, c, _ in results["json.loads of every line"])
        for name, rows in results.items():
            secs = statistics.median(s for s, _, _ in rows)
            cpu = statistics.median(c for _, c, _ in rows)
            rss = statistics.median(r for _, _, r in rows)
            print(f"  {name:30} median {secs:.2f} s ({secs / base:.2f}x baseline), CPU "
                  f"{cpu:.2f} s ({cpu / base_cpu:.2f}x), peak RSS {rss:.1f} MiB  "
                  f"[wall: {', '.join(f'{s:.2f}' for s, _, _ in rows)}; "
                  f"CPU: {', '.join(f'{c:.2f}' for _, c, _ in rows)}]")
        lags = follow_lag(env, log, args.lines)
        lags.sort()
        print(f"  runner logs -f: append -> rendered line, {len(lags)} lines: p50 "
              f"{statistics.median(lags):.1f} ms, p95 {lags[int(len(lags) * 0.95) - 1]:.1f} ms, "
              f"max {lags[-1]:.1f} ms")


if __name__ == "__main__":
    main()
