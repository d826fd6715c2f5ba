"""Worktree from a warm cache vs a fresh clone, for a generated repository of 10k files.

    python benchmarks/worktree_cache.py [--files 10000] [--commits 1] [--runs 5]
                                        [--dir /dev/shm] [--agent-user NAME] [--baseline REV ...]

Measures, per job: a plain ``git clone`` (what a runner without a cache would do), the
runner's ``worktree.prepare`` with an empty cache (mirror clone + worktree) and with a
warm one (fetch + worktree + checkout), and ``worktree.remove``; also ``git clone
--depth 1`` and, with ``--agent-user`` (run as root), the workspace of an agent under a
uid of its own: a warm cache and a clone of the job's branch that the agent owns
(runner/clone.py). The repository is served
over file:// (git's pack protocol, no hard links), so the numbers are git's own work
without network latency; over a real network the clone grows with the repository's size
while the warm fetch stays one round trip.

``--baseline REV`` (repeatable): also the warm prepare of runner as of that git revision
(``git archive`` of its ``runner/``), each system in a child process of its own that times
only the prepare, interleaved run by run with the clones and this tree's (also in a
child); a git shim counts the git processes of each warm prepare (load-independent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import export_runner  # noqa: E402
from runner import jobconfig, worktree  # noqa: E402
from runner.settings import load_settings  # noqa: E402


def make_history(path: Path, files: int, commits: int) -> str:
    """``files`` files in a first commit, then ``commits - 1`` commits of one changed file
    each, by ``git fast-import`` (seconds, not minutes)."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    out = []
    stamp = 1_700_000_000
    for c in range(commits):
        msg = f"commit {c}".encode()
        out.append(b"commit refs/heads/main\n")
        out.append(f"committer b <b@b> {stamp + c} +0000\n".encode())
        out.append(b"data %d\n%s\n" % (len(msg), msg))
        # (no "from": a commit to a branch of this stream goes on from its tip)
        changed = range(files) if c == 0 else [c * 7919 % files]
        for i in changed:
            body = f"# module {i} v{c}\nVALUE = {i}\n".encode() + b"x = 1\n" * 20
            out.append(f"M 100644 inline pkg{i // 100:03d}/mod{i % 100:03d}.py\n".encode())
            out.append(b"data %d\n%s\n" % (len(body), body))
    subprocess.run(["git", "-C", str(path), "fast-import", "--quiet"], input=b"".join(out), check=True)
    subprocess.run(["git", "-C", str(path), "reset", "-q", "--hard"], check=True)
    return f"file://{path}"


def make_repo(path: Path, files: int, commits: int = 1) -> str:
    if commits > 1:
        return make_history(path, files, commits)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for i in range(files):
        d = path / f"pkg{i // 100:03d}"
        d.mkdir(exist_ok=True)
        (d / f"mod{i % 100:03d}.py").write_text(f"# module {i}\nVALUE = {i}\n" + "x = 1\n" * 20)
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b", "-C", str(path)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "generated"], check=True)
    return f"file://{path}"


# A child process: one system's cold prepare, remove, then the warm prepare timed, with
# the git processes it ran (counted by the shim's log).
CHILD = """
import json, resource, sys, time, uuid
from pathlib import Path
from runner import jobconfig, worktree
from runner.settings import load_settings
url, root, calls = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
s = load_settings(database_url="postgresql://x@127.0.0.1/x", allow_file_repos=True,
                  job_root=root / "jobs", cache_dir=root / "cache")
def prepare():
    job = {"id": uuid.uuid4(), "repo_url": url, "config": {}}
    return worktree.prepare(job, jobconfig.parse({}), s)
worktree.remove(prepare(), s)
def cpu():
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                resource.getrusage(resource.RUSAGE_CHILDREN)))
calls.write_text("")
c, t = cpu(), time.perf_counter()
ws = prepare()
seconds, cpu_seconds = time.perf_counter() - t, cpu() - c
n = len(calls.read_text().splitlines())
worktree.remove(ws, s)
print(json.dumps({"seconds": seconds, "cpu": cpu_seconds, "git": n}))
"""

SHIM = """#!/bin/bash
echo "$*" >> {log}
exec {git} "$@"
"""




def child_prepare(tree: str, url: str, root: Path, shim_dir: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": tree, "PATH": f"{shim_dir}:{os.environ['PATH']}"}
    # cwd: not this checkout, whose runner/ would come first on sys.path ('' with -c)
    out = subprocess.run([sys.executable, "-c", CHILD, url, str(root), str(shim_dir / "calls")],
                         env=env, cwd=shim_dir, check=True, capture_output=True, text=True).stdout
    shutil.rmtree(root)
    return json.loads(out.splitlines()[-1])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--commits", type=int, default=1, help="history depth (fast-import)")
    ap.add_argument("--dir", default=None, help="where everything lives (e.g. /dev/shm: tmpfs)")
    ap.add_argument("--agent-user", default=None,
                    help="an existing user: also time the agent's own clone (needs root)")
    ap.add_argument("--baseline", metavar="REV", action="append", default=[],
                    help="also the warm prepare of runner as of this git revision (repeatable)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-wt-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        url = make_repo(base / "origin", args.files, args.commits)
        print(f"generated {args.files} files, {args.commits} commits in {base} "
              f"in {time.perf_counter() - t0:.1f} s")
        shim_dir = base / "shim"
        shim_dir.mkdir()
        (shim_dir / "git").write_text(SHIM.format(git=shutil.which("git"), log=shim_dir / "calls"))
        (shim_dir / "git").chmod(0o755)
        systems = {"this tree": str(Path(__file__).resolve().parent.parent)}
        for rev in args.baseline:
            systems[rev] = export_runner(rev, base / f"baseline-{rev}")
        children: dict[str, list[dict]] = {name: [] for name in systems}
        loads, depth1_cpu = [os.getloadavg()], []
        rows: dict[str, list[float]] = {k: [] for k in
                                        ("git clone (no cache)", "git clone --depth 1 (no cache)",
                                         "prepare, cold cache",
                                         "prepare, warm cache", "remove worktree",
                                         *(("prepare, warm cache, agent's own clone",
                                            "remove agent's clone") if args.agent_user else ()))}
        for run in range(args.runs):
            dest = base / f"clone{run}"
            rows["git clone (no cache)"].append(timed(lambda: subprocess.run(
                ["git", "clone", "-q", url, str(dest)], check=True)))
            shutil.rmtree(dest)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            rows["git clone --depth 1 (no cache)"].append(timed(lambda: subprocess.run(
                ["git", "clone", "-q", "--depth", "1", url, str(dest)], check=True)))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            depth1_cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            shutil.rmtree(dest)
            s = load_settings(database_url="postgresql://x@127.0.0.1/x", allow_file_repos=True,
                              job_root=base / f"jobs{run}", cache_dir=base / f"cache{run}")
            job = {"id": uuid.uuid4(), "repo_url": url, "config": {}}
            ws = None

            def cold():
                nonlocal ws
                ws = worktree.prepare(job, jobconfig.parse(job.get("config") or {}), s)
            rows["prepare, cold cache"].append(timed(cold))
            worktree.remove(ws, s)
            job = {"id": uuid.uuid4(), "repo_url": url, "config": {}}
            rows["prepare, warm cache"].append(timed(cold))
            rows["remove worktree"].append(timed(lambda: worktree.remove(ws, s)))
            if args.agent_user:
                s = load_settings(database_url="postgresql://x@127.0.0.1/x", allow_file_repos=True,
                                  job_root=base / f"jobs{run}", cache_dir=base / f"cache{run}",
                                  agent_user=args.agent_user)
                job = {"id": uuid.uuid4(), "repo_url": url, "config": {}}
                rows["prepare, warm cache, agent's own clone"].append(timed(cold))
                rows["remove agent's clone"].append(timed(lambda: worktree.remove(ws, s)))
            shutil.rmtree(base / f"cache{run}")
            for name, tree in systems.items():
                children[name].append(child_prepare(tree, url, base / f"child{run}", shim_dir))
            loads.append(os.getloadavg())
        print(f"\n{platform.node()} · {platform.machine()} · Python {platform.python_version()} · "
              f"{subprocess.run(['git', '--version'], capture_output=True, text=True).stdout.strip()}")
        print(f"{args.files} files, {args.commits} commits, {args.runs} runs, under {base.parent}\n")
        print("| step | median s | min s | max s |\n|---|---:|---:|---:|")
        for name, values in rows.items():
            print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
        depth1 = statistics.median(rows["git clone --depth 1 (no cache)"])
        print(f"\nwarm prepare in a child process per system, interleaved with the clones "
              f"(load average {' → '.join(f'{a[0]:.2f}' for a in loads)}):\n")
        print("| system | git processes | CPU s (user+sys, with children) | median s | min s "
              "| max s | median ÷ clone --depth 1 |\n|---|---:|---:|---:|---:|---:|---:|")
        print(f"| git clone --depth 1 | | {statistics.median(depth1_cpu):.3f} | {depth1:.3f} | "
              f"| | 1.00 |")
        for name, got in children.items():
            sec = [g["seconds"] for g in got]
            print(f"| {name} | {statistics.median(g['git'] for g in got):.0f} | "
                  f"{statistics.median(g['cpu'] for g in got):.3f} | "
                  f"{statistics.median(sec):.3f} | {min(sec):.3f} | {max(sec):.3f} | "
                  f"{statistics.median(sec) / depth1:.2f} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
