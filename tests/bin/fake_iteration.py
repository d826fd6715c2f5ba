"""A stand-in for `python -m runner.one_job`, driven by a plan file.

FAKE_DIR/plan.json holds a list of steps, one per iteration (the n-th run takes the n-th
step; past the end it holds until SIGTERM). A step is a dict:

  code        exit code (default 0)
  job         job id: write $RUNNER_STATE_DIR/current_job and link
              jobs/<job>.log -> ../runs/<run log>, as the real iteration does
  keep_job    leave current_job behind on exit (a crashed iteration)
  reset_in    write usage_limit_reset_at = now + reset_in (whole seconds)
  reset_raw   write this text to usage_limit_reset_at instead
  no_reset    remove usage_limit_reset_at
  hold        wait for SIGTERM (on SIGTERM: record it, let go of the job, exit 143)
  term_delay  with hold: take this many seconds to exit after SIGTERM (a slow rollback)

Every run appends one JSON line to FAKE_DIR/calls.jsonl: its number, pid, the RUNNER_*
environment, and what it saw at start (state directory, markers, state.json, run logs).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

fake_dir = Path(os.environ["FAKE_DIR"])
state_dir = Path(os.environ["RUNNER_STATE_DIR"])
log_dir = Path(os.environ["RUNNER_LOG_DIR"])
run_log = Path(os.environ["RUNNER_RUN_LOG"])


def append(name: str, record: dict) -> None:
    with open(fake_dir / name, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


counter = fake_dir / "counter"
n = int(read_text(counter) or "0") + 1
counter.write_text(str(n))
plan = json.loads((fake_dir / "plan.json").read_text())
step = plan[n - 1] if n <= len(plan) else {"hold": True}

state_json = read_text(state_dir / "state.json")
append(
    "calls.jsonl",
    {
        "n": n,
        "pid": os.getpid(),
        "started": time.time(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("RUNNER_")},
        "state_files": sorted(p.name for p in state_dir.iterdir()),
        "unhealthy": read_text(state_dir / "UNHEALTHY"),
        "token_expired": read_text(state_dir / "TOKEN_EXPIRED"),
        "state": json.loads(state_json) if state_json else None,
        "runs": sorted(p.name for p in (log_dir / "runs").iterdir()),
        "jobs": {p.name: os.readlink(p) for p in (log_dir / "jobs").iterdir() if p.is_symlink()},
    },
)

print(f"fake iteration {n} on stdout", flush=True)
print(f"fake iteration {n} on stderr", file=sys.stderr, flush=True)

job = step.get("job")
if job:
    (state_dir / "current_job").write_text(job + "\n")
    link = log_dir / "jobs" / f"{job}.log"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(Path("..") / "runs" / run_log.name)

reset_file = state_dir / "usage_limit_reset_at"
if "reset_in" in step:
    reset_file.write_text(f"{int(time.time()) + int(step['reset_in'])}\n")
if "reset_raw" in step:
    reset_file.write_text(step["reset_raw"])
if step.get("no_reset"):
    reset_file.unlink(missing_ok=True)


def let_go() -> None:
    if not step.get("keep_job"):
        (state_dir / "current_job").unlink(missing_ok=True)


if step.get("hold"):

    def on_term(signum, frame):
        append("signals.jsonl", {"n": n, "pid": os.getpid(), "signal": signum})
        time.sleep(float(step.get("term_delay", 0)))
        let_go()
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    tmp = fake_dir / f".holding.{n}"
    tmp.write_text(str(os.getpid()))
    tmp.rename(fake_dir / f"holding.{n}")
    while True:
        signal.pause()

let_go()
sys.exit(int(step.get("code", 0)))
