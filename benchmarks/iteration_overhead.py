"""Per-iteration overhead of `python -m runner.one_job`: process start → first claim → exit,
with an empty queue and RUNNER_WAIT_SECONDS=0, next to `python -c 'import psycopg'` and
`python -c pass`; and where the start-up time goes (`-X importtime`).

    python benchmarks/iteration_overhead.py [--quick] [--runs N] [--iterations N]

Uses hyperfine when installed (``-N``: no shell in between, 3 warm-ups, N=20 timed runs per
command), else a loop of its own with the same counts. Each hyperfine invocation is one
run; the script makes 3 runs and marks the median run per command. The one_job
iteration does, with an empty queue: settings, presence (worker_seen), reconcile, LISTEN
connection, requeue_expired + claim, the deadline passes at once, one more requeue_expired
+ claim, presence, exit 0.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, loadavg, print_header, runner_env, runs_with_median_marked, table  # noqa: E402


def commands() -> list[tuple[str, list[str]]]:
    py = sys.executable
    return [
        ("python -m runner.one_job (empty queue, RUNNER_WAIT_SECONDS=0)", [py, "-m", "runner.one_job"]),
        ("python -c 'import psycopg'", [py, "-c", "import psycopg"]),
        ("python -c pass", [py, "-c", "pass"]),
    ]


def with_hyperfine(cmds, env, cwd, n: int, tmp: Path) -> dict[str, dict[str, float]]:
    import shlex

    out = tmp / "hf.json"
    argv = ["hyperfine", "-N", "--warmup", "3", "--runs", str(n), "--export-json", str(out),
            "--style", "none"]
    for name, cmd in cmds:
        argv += ["-n", name, shlex.join(cmd)]
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    res = json.loads(out.read_text())["results"]
    return {r["command"]: {"median": r["median"], "mean": r["mean"], "stddev": r["stddev"] or 0.0,
                           "min": r["min"], "max": r["max"]} for r in res}


def with_loop(cmds, env, cwd, n: int) -> dict[str, dict[str, float]]:
    res = {}
    for name, cmd in cmds:
        times = []
        for i in range(n + 3):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        res[name] = {"median": statistics.median(times), "mean": statistics.mean(times),
                     "stddev": statistics.stdev(times), "min": min(times), "max": max(times)}
    return res


_IMPORT = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def importtime(env, cwd, repeats: int) -> list[tuple[str, int, float, float]]:
    """(module, depth, median self ms, median cumulative ms), top 10 by cumulative."""
    per: dict[str, list[tuple[int, int, int]]] = {}
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner.one_job"],
                              env=env, cwd=cwd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for line in proc.stderr.splitlines():
            m = _IMPORT.match(line)
            if m:
                depth = (len(m.group(3)) - 1) // 2
                per.setdefault(m.group(4), []).append((depth, int(m.group(1)), int(m.group(2))))
    rows = [(name, v[0][0], statistics.median(x[1] for x in v) / 1000,
             statistics.median(x[2] for x in v) / 1000) for name, v in per.items()]
    rows.sort(key=lambda r: r[3], reverse=True)
    return rows[:10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run of 10 iterations")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--iterations", type=int, default=None)
    args = ap.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    n = args.iterations or (10 if args.quick else 20)
    tool = "hyperfine" if shutil.which("hyperfine") else "own loop"

    print_header("Iteration overhead", ["benchmarks/iteration_overhead.py", *sys.argv[1:]])
    cmds = commands()
    per_cmd: dict[str, list[list[object]]] = {name: [] for name, _ in cmds}
    with fresh_database("iter") as url, tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        env = runner_env(url, tmp / "rt", RUNNER_WAIT_SECONDS="0", RUNNER_WORKER_ID="bench-iter")
        for r in range(runs):
            before = loadavg()
            res = (with_hyperfine(cmds, env, tmp, n, tmp) if tool == "hyperfine"
                   else with_loop(cmds, env, tmp, n))
            after = loadavg()
            for name, _ in cmds:
                s = res[name]
                per_cmd[name].append([name, r + 1, before, n, s["median"] * 1000, s["mean"] * 1000,
                                      s["stddev"] * 1000, s["min"] * 1000, s["max"] * 1000, after])
        imports = importtime(env, tmp, 1 if args.quick else 3)

    rows = runs_with_median_marked([per_cmd[name] for name, _ in cmds], value=4)
    print(f"Wall time per process ({tool}, {n} timed runs per command per run); milliseconds.\n")
    print(table(["command", "run", "load before", "n", "median", "mean", "stddev", "min", "max",
                 "load after"], rows))
    print(f"\n`python -X importtime -m runner.one_job`: top 10 by cumulative time "
          f"(median of {1 if args.quick else 3} runs; load {loadavg()}); milliseconds.\n")
    print(table(["module", "nesting depth", "self", "cumulative"],
                [[f"`{m}`", d, s, c] for m, d, s, c in imports]))


if __name__ == "__main__":
    main()
