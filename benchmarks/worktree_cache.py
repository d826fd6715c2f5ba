"""Worktree from a warm cache vs a fresh clone, for a generated repository of 10k files.

    python benchmarks/worktree_cache.py [--files 10000] [--commits 1] [--runs 5]
                                        [--dir /dev/shm] [--agent-user NAME]

Measures, per job: a plain ``git clone`` (what a runner without a cache would do), the
runner's ``worktree.prepare`` with an empty cache (mirror clone + worktree) and with a
warm one (fetch + worktree + checkout), and ``worktree.remove``; also ``git clone
--depth 1`` and, with ``--agent-user`` (run as root), the workspace of an agent under a
uid of its own: a warm cache and a clone of the job's branch that the agent owns
(runner/clone.py). The repository is served
over file:// (git's pack protocol, no hard links), so the numbers are git's own work
without network latency; over a real network the clone grows with the repository's size
while the warm fetch stays one round trip.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-wt-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        url = make_repo(base / "origin", args.files, args.commits)
        print(f"generated {args.files} files, {args.commits} commits in {base} "
              f"in {time.perf_counter() - t0:.1f} s")
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
            rows["git clone --depth 1 (no cache)"].append(timed(lambda: subprocess.run(
                ["git", "clone", "-q", "--depth", "1", url, str(dest)], check=True)))
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
        print(f"\n{platform.node()} · {platform.machine()} · Python {platform.python_version()} · "
              f"{subprocess.run(['git', '--version'], capture_output=True, text=True).stdout.strip()}")
        print(f"{args.files} files, {args.commits} commits, {args.runs} runs, under {base.parent}\n")
        print(f"| step | median s | min s | max s |\n|---|---:|---:|---:|")
        for name, values in rows.items():
            print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
