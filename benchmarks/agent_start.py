"""Enqueue → agent exec through a waiting ``python -m runner.one_job``, without a repository
and with a 100-file repository from a warm mirror; and where the time goes.

    python benchmarks/agent_start.py [--runs 3] [--jobs 30] [--files 100] [--baseline REV ...]
                                     [--profile]

Each sample: a fresh ``one_job`` (RUNNER_WAIT_SECONDS = RUNNER_POLL_SECONDS = 600, so only
NOTIFY wakes it) is left until pg_stat_activity shows it waiting, then one job is enqueued
with ``Queue.enqueue``; the ``command`` agent is a C program (notify_latency.py's) that
writes CLOCK_MONOTONIC first thing. Latency = that stamp − CLOCK_MONOTONIC before the
enqueue. The repository: ``--files`` small files in one commit, served as ``file://``
(RUNNER_ALLOW_FILE_REPOS); one job warms the mirror before the samples. Samples of the
cases (and of ``--baseline REV``, runner as of that git revision, ``git archive`` of its
``runner/``) are interleaved one by one; each run uses a fresh database.

``--profile``: ``git`` is a shim that logs each call's wall time (bash, adds ~1 ms a
call: use it for the breakdown, not for the headline), and the run log's structlog
timestamps split the path: enqueue → job_claimed → worktree_created → agent_starting →
agent exec; and the ms the iteration spent making the next job's spare worktree
(runner/spare.py) after the job's record, which delays the next claim.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402
    export_runner, fresh_database, loadavg, median, monotonic, pct, print_header, runner_env, table,
)
from notify_latency import stamp_command  # noqa: E402

import psycopg  # noqa: E402

from runner.queue import Queue  # noqa: E402

SHIM = """#!/bin/bash
s=$EPOCHREALTIME
{git} "$@"
rc=$?
printf '%s %s %s\\n' "$s" "$EPOCHREALTIME" "$*" >> {log}
exit $rc
"""


def make_repo(root: Path, files: int) -> str:
    src = root / "src"
    for i in range(files):
        d = src / f"d{i // 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_text(f"VALUE = {i}\n" * 5)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "files"]):
        subprocess.run(["git", "-C", str(src), *args], check=True, env=env)
    return f"file://{src}"




def wait_ready(admin: psycopg.Connection, worker_id: str, proc: subprocess.Popen,
               timeout: float = 60) -> None:
    """Until the worker's connection is renamed for its LISTEN and has run a statement
    after it (its empty claim, then maybe its presence): it waits for a NOTIFY."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"one_job exited early with {proc.returncode}")
        row = admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND state = 'idle' "
            "AND query <> '' AND query NOT ILIKE 'LISTEN%%'",
            (f"runner:listen:{worker_id}"[:63],)).fetchone()
        if row:
            return
        time.sleep(0.005)
    raise RuntimeError("one_job did not reach its wait in time")


def one_sample(url: str, producer: Queue, admin: psycopg.Connection, env: dict[str, str],
               tmp: Path, stamps: Path, wid: str, repo: str | None) -> dict[str, float]:
    env = {**env, "RUNNER_WORKER_ID": wid}
    proc = subprocess.Popen([sys.executable, "-m", "runner.one_job"], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        wait_ready(admin, wid, proc)
        time.sleep(0.02)
        t0, wall0 = monotonic(), time.time()
        job = producer.enqueue(prompt=wid, repo_url=repo, config={"agent": "command"})
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        raise RuntimeError(f"one_job exited {code} for job {job['id']}")
    status = producer.get(job["id"])["status"]
    assert status == "succeeded", status
    out = {"total": float((stamps / str(job["id"])).read_text()) - t0, "wall0": wall0,
           "job": str(job["id"])}
    return out


def steps(env: dict[str, str], sample: dict, shim_log: Path | None) -> dict[str, float]:
    """ms from the enqueue to each logged event of the job (and its git calls)."""
    from datetime import datetime

    log = Path(env["RUNNER_LOG_DIR"]) / "jobs" / f"{sample['job']}.log"
    out: dict[str, float] = {}
    for line in log.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("event") in ("job_claimed", "worktree_created", "agent_starting"):
            when = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            out.setdefault(e["event"], (when - sample["wall0"]) * 1000)
        elif isinstance(e, dict) and e.get("event") == "spare_made":
            out["spare made (ms)"] = e["ms"]  # after the record, before the iteration's exit
    out["agent exec"] = sample["total"] * 1000
    if shim_log is not None and shim_log.exists():
        calls = [line.split(" ", 2) for line in shim_log.read_text().splitlines()]
        spawned = sample["wall0"] + sample["total"]  # the agent's exec, on the wall clock
        calls = [c for c in calls if sample["wall0"] <= float(c[0]) < spawned]
        out["git calls"] = len(calls)
        out["git ms"] = sum((float(b) - float(a)) * 1000 for a, b, _ in calls)
        out["git argv"] = [f"{c[2].split(' -c ')[-1].removeprefix('gc.autoDetach=false ')[:40]} "  # type: ignore[assignment]
                           f"({(float(c[1]) - float(c[0])) * 1000:.1f} ms)" for c in calls]
        shim_log.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=30, help="samples per case and run")
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--baseline", metavar="REV", action="append", default=[],
                    help="also runner as of this git revision (repeatable)")
    ap.add_argument("--profile", action="store_true", help="git shim + log timestamps")
    args = ap.parse_args()
    print_header("Enqueue → agent exec", ["benchmarks/agent_start.py", *sys.argv[1:]])
    rows, prof = [], {}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        command, kind = stamp_command(tmp)
        repo = make_repo(tmp, args.files)
        systems = {"runner": str(HERE.parent)}
        for rev in args.baseline:
            systems[f"runner at {rev}"] = export_runner(rev, tmp / f"baseline-{rev}")
        shim_log = None
        path = os.environ["PATH"]
        if args.profile:
            shim_dir, shim_log = tmp / "shim", tmp / "git-calls.log"
            shim_dir.mkdir()
            (shim_dir / "git").write_text(SHIM.format(git=shutil.which("git"), log=shim_log))
            (shim_dir / "git").chmod(0o755)
            path = f"{shim_dir}:{path}"
        cases = {"no repo": None, f"{args.files}-file repo, warm mirror": repo}
        for r in range(args.runs):
            with fresh_database("agentstart") as url, Queue.open(url, "bench-enqueuer") as producer, \
                    psycopg.connect(url, autocommit=True) as admin:
                load = loadavg()
                stamps = tmp / f"stamps{r}"
                stamps.mkdir()
                envs = {name: runner_env(url, tmp / f"rt{r}-{i}", PYTHONPATH=tree, PATH=path,
                                         RUNNER_WAIT_SECONDS="600", RUNNER_POLL_SECONDS="600",
                                         RUNNER_ALLOW_FILE_REPOS="1",
                                         RUNNER_AGENT_COMMAND=f"{command} {stamps}")
                        for i, (name, tree) in enumerate(systems.items())}
                for name, env in envs.items():  # warm each one's mirror
                    one_sample(url, producer, admin, env, tmp, stamps, f"warm-{r}-{name[-7:]}", repo)
                    if shim_log is not None and shim_log.exists():
                        shim_log.unlink()
                samples: dict[tuple[str, str], list[float]] = {}
                for i in range(args.jobs):
                    for name, env in envs.items():
                        for case, case_repo in cases.items():
                            s = one_sample(url, producer, admin, env, tmp, stamps,
                                           f"b-{r}-{i}-{name[-7:]}-{len(case)}", case_repo)
                            samples.setdefault((name, case), []).append(s["total"] * 1000)
                            if args.profile:
                                prof.setdefault((name, case), []).append(steps(env, s, shim_log))
                for (name, case), ms in samples.items():
                    rows.append([r + 1, name, case, load, len(ms), f"{pct(ms, 50):.1f}",
                                 f"{pct(ms, 95):.1f}", f"{max(ms):.1f}", loadavg()])
            print(f"run {r + 1}/{args.runs} done", file=sys.stderr, flush=True)
    print(f"agent: {kind}\n")
    print(table(["run", "system", "case", "load before", "n", "p50 ms", "p95 ms", "max ms",
                 "load after"], rows))
    for (name, case), items in prof.items():
        print(f"\nprofile, {name}, {case} (medians over {len(items)} samples, ms after the "
              f"enqueue; git: the calls before the agent's exec):")
        for key in ("job_claimed", "worktree_created", "agent_starting", "agent exec", "git calls", "git ms",
                    "spare made (ms)"):
            values = [i[key] for i in items if key in i]
            if values:
                print(f"  {key:18} {median(values):8.1f}")
        argv = [i.get("git argv") for i in items if i.get("git argv")]
        if argv:
            print("  git calls of the last sample: " + "; ".join(argv[-1]))


if __name__ == "__main__":
    main()
