"""runner/sweep.py: what the iteration's housekeeping removes, and what it must keep
(a queued job's directory holds its next attempt's session; a failed job's is kept for
inspection for RUNNER_KEEP_FAILED_HOURS). Real database, real git, real directories."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from gitkit import settings as git_settings

from runner import repo_cache, staging, sweep
from runner.workspace import KEPT_WORK


def _settings(tmp_path: Path, db_url: str, **extra):
    return git_settings(tmp_path, database_url=db_url, **extra)


def _job_dir(s, job_id) -> Path:
    path = s.job_root / str(job_id)
    (path / "work").mkdir(parents=True)
    (path / "work" / "file.txt").write_text("agent's work")
    return path


def _finish(queue, status: str, hours_ago: float = 0):
    job = queue.enqueue(prompt="p")
    claim = queue.claim(["default"], 60)
    assert claim is not None and str(claim.id) == str(job["id"])
    assert queue.finish(claim, status, result={}, error=None if status == "succeeded" else "x")
    if hours_ago:
        queue.conn.execute("UPDATE jobs SET finished_at = now() - make_interval(hours => %s) "
                            "WHERE id = %s", (hours_ago, job["id"]))
    return job["id"]


def test_succeeded_go_at_once_failed_stay_for_inspection_queued_stay(queue, db_url, tmp_path):
    s = _settings(tmp_path, db_url, keep_failed_hours=24)
    done = _job_dir(s, _finish(queue, "succeeded"))
    fresh_failure = _job_dir(s, _finish(queue, "failed"))
    old_failure = _job_dir(s, _finish(queue, "failed", hours_ago=30))
    done_with_leftovers = _job_dir(s, _finish(queue, "succeeded"))
    (done_with_leftovers / KEPT_WORK).write_text("{}")
    waiting = _job_dir(s, queue.enqueue(prompt="next attempt continues here")["id"])
    unknown = _job_dir(s, uuid.uuid4())  # no such job (deleted by the web app)
    not_ours = s.job_root / "lost+found"
    not_ours.mkdir()

    removed = sweep.sweep_job_root(queue, s)

    assert set(removed) == {done.name, old_failure.name, unknown.name}
    for kept in (fresh_failure, done_with_leftovers, waiting, not_ours):
        assert kept.is_dir(), kept
    assert (waiting / "work" / "file.txt").read_text() == "agent's work"


def test_another_workers_staged_dir_goes_once_stale_ours_stays(queue, db_url, tmp_path):
    s = _settings(tmp_path, db_url)
    mine = staging.next_job_dir(s)
    mine.mkdir(parents=True)
    fresh, stale = s.job_root / ".next-0123456789abcdef", s.job_root / ".next-fedcba9876543210"
    fresh.mkdir()
    (stale / "work.ready").mkdir(parents=True)
    week_ago = time.time() - sweep.STALE_STAGING_SECONDS - 60
    for path in (mine, stale):
        os.utime(path, (week_ago, week_ago))
    sweep.sweep_job_root(queue, s)
    assert mine.is_dir() and fresh.is_dir() and not stale.exists()


def test_a_symlink_in_a_job_dir_is_unlinked_never_followed(queue, db_url, tmp_path):
    s = _settings(tmp_path, db_url)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("not the job's")
    job_dir = _job_dir(s, _finish(queue, "succeeded"))
    (job_dir / "work" / "link").symlink_to(outside)
    assert sweep.sweep_job_root(queue, s) == [job_dir.name]
    assert not job_dir.exists() and (outside / "precious").read_text() == "not the job's"


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_old_job_branches_go_unless_a_worktree_uses_them(tmp_path, db_url):
    s = _settings(tmp_path, db_url, keep_branch_hours=1)
    mirror = s.cache_dir / "repo-0123.git"
    mirror.parent.mkdir(parents=True)
    _git("init", "-q", "--bare", str(mirror), cwd=tmp_path)
    seed = tmp_path / "seed"
    _git("init", "-q", str(seed), cwd=tmp_path)
    (seed / "f").write_text("x")
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "seed", "--allow-empty",
         cwd=seed)
    _git("push", "-q", str(mirror), "HEAD:refs/heads/main", cwd=seed)
    old = str(int(time.time()) - 2 * 3600)
    for branch in ("runner/old", "runner/in-use", "runner/recent", "someones-own"):
        _git("branch", branch, "main", cwd=mirror)
    for branch, created in (("runner/old", old), ("runner/in-use", old),
                            ("runner/recent", str(int(time.time())))):
        _git("config", "--file", "config", f"branch.{branch}.runnercreated", created, cwd=mirror)
    _git("worktree", "add", "-q", str(tmp_path / "wt"), "runner/in-use", cwd=mirror)

    assert sweep.sweep_mirrors(s) == ["runner/old"]
    branches = _git("branch", "--format=%(refname:short)", cwd=mirror).split()
    assert sorted(branches) == ["main", "runner/in-use", "runner/recent", "someones-own"]
    assert "runner/old" not in (mirror / "config").read_text()


def test_a_mirror_another_worker_holds_is_left_for_next_time(tmp_path, db_url):
    s = _settings(tmp_path, db_url, keep_branch_hours=1)
    mirror = s.cache_dir / "busy-0123.git"
    mirror.parent.mkdir(parents=True)
    _git("init", "-q", "--bare", str(mirror), cwd=tmp_path)
    _git("config", "--file", "config", "branch.runner/old.runnercreated", "1", cwd=mirror)
    # Another worker's process holds the mirror's lock (the same flock repo_cache takes).
    # -o: only flock itself holds it, so the lock goes when flock does.
    holder = subprocess.Popen(["flock", "-o", str(repo_cache.lock_path(mirror)), "sleep", "30"],
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with repo_cache.locked(mirror, s, wait=False) as got:
                if not got:
                    break
            time.sleep(0.05)
        assert sweep.sweep_mirrors(s) == []
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    # flock's child may still hold the lock's descriptor for a moment (it closes it only
    # before its exec): the other worker is gone once the lock is free.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with repo_cache.locked(mirror, s, wait=False) as got:
            if got:
                break
        time.sleep(0.05)
    assert "runner/old" in (mirror / "config").read_text()  # left for the next sweep
    assert sweep.sweep_mirrors(s) == ["runner/old"]
