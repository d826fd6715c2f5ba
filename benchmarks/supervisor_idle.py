"""What an idle supervisor costs: processes it starts besides its iterations, and CPU.

    python benchmarks/supervisor_idle.py [--seconds 120] [--iteration-seconds 30] [--old REV]

After a warm-up of 5 s (the helper it starts once), runs bin/run-agent.sh under ``strace -f -e trace=execve`` with the production heartbeat
(30 s) and an iteration that waits like an idle worker's LISTEN (``--iteration-seconds``,
270 s in production; shorter here so that several iterations fit) and exits 0. Counts
every program the supervisor executed that is not an iteration, and the CPU seconds of
the supervisor and its helper, both scaled to 10 minutes. With ``--old REV`` (default
f9d934c, the last all-bash supervisor) that script is measured in the same run, after.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXEC = re.compile(r'^(\d+)\s+([\d.]+)\s+execve\("([^"]+)"')
WARM_UP_S = 5  # what a supervisor starts once (its helper) is not counted


def measure(script: Path, seconds: float, iteration_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "HOME": str(root), "RUNNER_LOG_DIR": str(root / "logs"),
            "RUNNER_STATE_DIR": str(root / "state"), "RUNNER_PYTHON": sys.executable,
        }
        # The command is split on blanks: give the iteration as a tiny script instead.
        it = root / "iteration.py"
        it.write_text(f"import time\ntime.sleep({iteration_s})\n")
        env["RUNNER_ITERATION_COMMAND"] = f"{sys.executable} {it}"
        trace = root / "trace"
        proc = subprocess.Popen(["strace", "-f", "-qq", "-ttt", "-e", "trace=execve", "-o", str(trace),
                                 "bash", str(script)], env=env, cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(WARM_UP_S)
        cpu_start, counted_from = _tree_cpu(proc.pid, exclude=str(it)), time.time()
        time.sleep(seconds)
        cpu = _tree_cpu(proc.pid, exclude=str(it)) - cpu_start
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        programs: Counter = Counter()
        iterations = 0
        lines = trace.read_text().splitlines()
        for line in lines[1:]:  # the first execve is bash itself
            m = EXEC.match(line)
            if not m:
                continue
            if float(m.group(2)) < counted_from:
                continue
            if str(it) in line:
                iterations += 1
            else:
                programs[Path(m.group(3)).name] += 1
        scale = 600 / seconds
        return {"iterations": iterations, "spawned": sum(programs.values()),
                "per_10_min": round(sum(programs.values()) * scale, 1),
                "programs": dict(programs.most_common()),
                "cpu_s_per_10_min": round(cpu * scale, 3)}


def _tree_cpu(pid: int, exclude: str) -> float:
    """utime+stime (s) of the supervisor's process tree, without the iteration."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if exclude in cmd or "strace" in cmd:
            continue
        if int(stat[2]) == pid or _descends(int(entry.name), pid):
            total += (int(stat[11]) + int(stat[12])) / ticks
    return total


def _descends(child: int, ancestor: int) -> bool:
    while child > 1:
        try:
            child = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if child == ancestor:
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--iteration-seconds", type=float, default=30)
    ap.add_argument("--old", default="f9d934c", help="git revision of a supervisor to compare")
    args = ap.parse_args()
    if shutil.which("strace") is None:
        sys.exit("needs strace (apt-get install strace)")
    print(f"idle supervisor, {args.seconds:g} s each, iterations of {args.iteration_seconds:g} s, "
          f"heartbeat 30 s; load {os.getloadavg()[0]:.2f}")
    runs = [("bin/run-agent.sh (this checkout)", REPO / "bin" / "run-agent.sh")]
    if args.old:
        old = Path(tempfile.mkdtemp()) / "run-agent.sh"
        old.write_bytes(subprocess.run(["git", "show", f"{args.old}:bin/run-agent.sh"], cwd=REPO,
                                       check=True, capture_output=True).stdout)
        runs.append((f"bin/run-agent.sh at {args.old}", old))
    for name, script in runs:
        r = measure(script, args.seconds, args.iteration_seconds)
        print(f"{name}: {r['iterations']} iterations; {r['spawned']} other processes "
              f"({r['per_10_min']} per 10 min): {r['programs']}; "
              f"CPU {r['cpu_s_per_10_min']} s per 10 min (supervisor and helper)")


if __name__ == "__main__":
    main()
