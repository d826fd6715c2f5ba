"""Resident memory of the `python -m runner.one_job` process while an agent runs.

    python benchmarks/agent_memory.py [--quick] [--runs N] [--agent-seconds S]
                                      [--scenario sleep,bigline,bigresult]

Scenarios: ``sleep`` — the ``command`` agent with RUNNER_AGENT_COMMAND="sleep 5";
``bigline`` — a ``command`` agent that prints one 200 MB line on stdout (and a NUL and
invalid UTF-8) then sleeps; ``bigresult`` — a fake ``claude`` binary whose stream-json
``result`` event carries a 20 MB answer. One iteration started; /proc/<pid>/status sampled every 100 ms (VmRSS, VmHWM) until it exits.
"While the agent runs" = the samples where the iteration has a child process. Peak =
the last VmHWM seen (the kernel's high-water mark of RSS); steady = median VmRSS while
the agent runs. Only the Python process is counted, not the agent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database, loadavg, median_index, print_header, runner_env, table  # noqa: E402

from runner.queue import Queue  # noqa: E402


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def has_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return bool(fh.read().split())
    except FileNotFoundError:
        return False


_BIGLINE = """import sys, time
out = sys.stdout.buffer
out.write(b"nul\\x00 and invalid \\xff\\xfe utf-8\\n")
chunk = b"x" * (1 << 20)
for _ in range(200):
    out.write(chunk)
out.write(b"\\n"); out.flush(); time.sleep({secs})
"""
_BIGRESULT = """import json, sys, time
print(json.dumps({{"type": "system", "subtype": "init", "model": "m", "session_id": "s"}}), flush=True)
time.sleep({secs})
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                  "result": "y" * (20 << 20), "session_id": "s",
                  "usage": {{"input_tokens": 1, "output_tokens": 1}}}}), flush=True)
"""


def one_run(url: str, tmp: Path, agent_seconds: float, scenario: str = "sleep") -> dict[str, float]:
    extra = {"RUNNER_AGENT_COMMAND": f"sleep {agent_seconds:g}"}
    config = {"agent": "command"}
    if scenario in ("bigline", "bigresult"):
        script = tmp / f"{scenario}.py"
        script.write_text((_BIGLINE if scenario == "bigline" else _BIGRESULT).format(secs=agent_seconds))
        if scenario == "bigline":
            extra = {"RUNNER_AGENT_COMMAND": f"{sys.executable} {script}"}
        else:
            fake = tmp / "claude"
            fake.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
            fake.chmod(0o755)
            extra = {"RUNNER_CLAUDE_BIN": str(fake), "ANTHROPIC_API_KEY": "sk-ant-bench"}
            config = {"agent": "claude"}
    with Queue.open(url, "bench-mem") as q:
        job = q.enqueue(prompt="memory", config=config)
    env = runner_env(url, tmp, RUNNER_WAIT_SECONDS="0", RUNNER_WORKER_ID="bench-mem", **extra)
    proc = subprocess.Popen([sys.executable, "-m", "runner.one_job"], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    samples = []  # (t, rss, hwm, anon, agent_running)
    t0 = time.monotonic()
    while proc.poll() is None:
        s = status_kb(proc.pid)
        if s:
            samples.append((time.monotonic() - t0, s.get("VmRSS", 0), s.get("VmHWM", 0),
                            s.get("RssAnon", 0), has_child(proc.pid)))
        time.sleep(0.1)
    assert proc.returncode == 0, proc.returncode
    with Queue.open(url, "bench-mem") as q:
        row = q.get(job["id"])
        assert row["status"] == "succeeded", (row["status"], row["error"])
    during = [s for s in samples if s[4]]
    return {
        "samples": len(samples), "during": len(during),
        "peak": max(s[2] for s in samples) / 1024,
        "steady": statistics.median(s[1] for s in during) / 1024,
        "steady_anon": statistics.median(s[3] for s in during) / 1024,
        "before_agent": max((s[1] for s in samples if not s[4] and s[0] < during[0][0]), default=0) / 1024,
        "wall": time.monotonic() - t0,
        "agent_from": during[0][0], "agent_to": during[-1][0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run, 2 s agent")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--agent-seconds", type=float, default=None)
    ap.add_argument("--scenario", default="sleep,bigline,bigresult")
    args = ap.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    secs = args.agent_seconds or (2.0 if args.quick else 5.0)

    print_header("Memory", ["benchmarks/agent_memory.py", *sys.argv[1:]])
    for scenario in args.scenario.split(","):
        measure(scenario, runs, secs)


def measure(scenario: str, runs: int, secs: float) -> None:
    rows = []
    with fresh_database("mem") as url:
        for r in range(runs):
            before = loadavg()
            with tempfile.TemporaryDirectory() as tmpd:
                res = one_run(url, Path(tmpd), secs, scenario)
            rows.append([r + 1, before, res["samples"], res["during"], res["before_agent"],
                         res["steady"], res["steady_anon"], res["peak"], res["agent_from"],
                         res["wall"] - res["agent_to"], res["wall"], loadavg()])
    mid = median_index([row[7] for row in rows])
    for i, row in enumerate(rows):
        row[0] = f"{row[0]}{' (median)' if i == mid else ''}"
    print(f"\n## {scenario}\n\nRSS of the one_job process, sampled every 100 ms, agent sleeps {secs:g} s; MiB.\n")
    print(table(["run", "load before", "samples", "samples with agent running",
                 "RSS before the agent", "steady RSS (agent running, median)",
                 "of which anonymous", "peak (VmHWM)", "agent seen at s", "exit after agent s",
                 "iteration s", "load after"], rows))


if __name__ == "__main__":
    main()
