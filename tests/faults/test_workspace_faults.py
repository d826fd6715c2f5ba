"""Faults under the job's feet: the job root's disk full, a corrupt mirror in the cache, the
worktree deleted while the agent runs. Each job fails or is requeued with a readable
reason in `error`; the worker goes on and the next job succeeds.

Real iterations (`python -m runner.one_job`), a real PostgreSQL, real git.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fleet import wait_for
from runner import worktree
from runner.workspace import remove_tree
from tests.conftest import fake, make_git_repo, run_one_job, start_one_job


# -- the job root's disk is full -------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs: the job root of these tests."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _incompressible(path: Path, size: int) -> None:
    path.write_bytes(os.urandom(size))


def test_disk_full_from_the_agent_fails_the_job_with_the_reason_and_the_next_succeeds(
        runner_env, queue, small_disk):
    env = {**runner_env, "RUNNER_JOB_ROOT": str(small_disk),
           # A failed job's directory is kept for inspection; on a full disk that would
           # starve every later job until RUNNER_KEEP_FAILED_HOURS passes (docs/faults.md).
           "RUNNER_KEEP_FAILED_HOURS": "0"}
    big = queue.enqueue(prompt="fill the disk", max_attempts=1, config={"agent": "command"})
    nxt = queue.enqueue(prompt="small job", config=fake(write={"ok.txt": "fine"}))

    # An agent that writes 3 MB into its worktree on the 1 MiB disk.
    first = run_one_job(env, RUNNER_AGENT_COMMAND="/bin/sh -c 'head -c 3000000 /dev/zero > big.bin'")
    assert first.returncode == 0, first.stdout[-3000:]
    row = queue.get(big["id"])
    assert row["status"] == "failed"
    assert "the agent exited with code 1" in row["error"]
    # The agent's own stderr may not fit on the full disk either; the runner says it.
    assert ("No space left on device" in row["error"]
            or "the disk holding the job directory is full" in row["error"]), row["error"]

    second = run_one_job(env)
    assert second.returncode == 0, second.stdout[-3000:]
    assert queue.get(nxt["id"])["status"] == "succeeded", queue.get(nxt["id"])["error"]


def test_a_repository_bigger_than_the_job_root_is_retried_with_the_reason_then_failed(
        runner_env, queue, small_disk, tmp_path):
    origin = tmp_path / "big-origin"
    url = make_git_repo(origin)
    _incompressible(origin / "blob.bin", 3 * 1024 * 1024)
    subprocess.run(["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t",
                    "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "-m", "big"], check=True)
    small = make_git_repo(tmp_path / "small-origin")
    env = {**runner_env, "RUNNER_JOB_ROOT": str(small_disk), "RUNNER_RETRY_BACKOFF_SECONDS": "0",
           "RUNNER_KEEP_FAILED_HOURS": "0"}
    big = queue.enqueue(prompt="p", repo_url=url, max_attempts=2, config=fake())
    nxt = queue.enqueue(prompt="p", repo_url=small, config=fake(commit="c", write={"a": "b"}))

    codes = []
    for _ in range(3):
        proc = run_one_job(env)
        codes.append(proc.returncode)
        row = queue.get(big["id"])
        assert "unable to write file blob.bin" in (row["error"] or ""), (row["status"], row["error"], proc.stdout[-3000:])
    # The runner cannot tell a full disk from its own bug: exit 1, so the supervisor
    # backs off, and the attempt is refunded (a full disk is not the job's fault); but a
    # job that can never fit ends failed after three such hand-backs, saying so.
    assert codes == [1, 1, 1]
    row = queue.get(big["id"])
    assert row["status"] == "failed", row
    assert row["attempts"] == 1, row
    assert "the runner failed on this job 3 times" in row["error"]
    events = [e["event"] for e in queue.events(big["id"])]
    assert events.count("rolled_back") == 2 and events[-1] == "failed", events
    # Nothing of the big checkout is left on the small disk, and the next job fits.
    assert list(small_disk.iterdir()) in ([], [small_disk / str(big["id"])])
    proc = run_one_job(env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert queue.get(nxt["id"])["status"] == "succeeded"


# -- a corrupt mirror in the cache -----------------------------------------------------

def _only_mirror(cache: Path) -> Path:
    mirrors = [p for p in cache.glob("*.git") if p.is_dir()]
    assert len(mirrors) == 1, mirrors
    return mirrors[0]


def _garbage_head(m: Path) -> None:
    (m / "HEAD").write_bytes(b"\x00\xffgarbage\n")


def _truncate_objects(m: Path) -> None:
    for f in (m / "objects").rglob("*"):
        if f.is_file():
            f.chmod(0o644)
            f.write_bytes(b"")


def _garbage_packs(m: Path) -> None:
    subprocess.run(["git", "-C", str(m), "repack", "-a", "-d", "-q"], check=True)
    packs = list((m / "objects" / "pack").glob("*.pack"))
    assert packs
    for f in packs:
        f.chmod(0o644)
        with open(f, "r+b") as fh:
            fh.seek(12)
            fh.write(os.urandom(max(f.stat().st_size - 32, 1)))


def _no_objects(m: Path) -> None:
    shutil.rmtree(m / "objects")


def _garbage_config(m: Path) -> None:
    (m / "config").write_text("[core\n\tbare = maybe\x00\n")


def _garbage_packed_refs(m: Path) -> None:
    for ref in (m / "refs" / "remotes" / "origin").rglob("*"):
        if ref.is_file():
            ref.write_text("0" * 40 + "\n")
    (m / "packed-refs").write_text("garbage garbage\n")


@pytest.mark.parametrize("corrupt", [_garbage_head, _truncate_objects, _garbage_packs,
                                     _no_objects, _garbage_config, _garbage_packed_refs],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_corrupt_mirror_is_recloned_and_the_next_job_succeeds(runner_env, queue, tmp_path, corrupt):
    url = make_git_repo(tmp_path / "origin", {"README.md": "# r\n", "src/a.py": "print(1)\n"})
    first = queue.enqueue(prompt="p", repo_url=url, config=fake(write={"one.txt": "1"}, commit="one"))
    assert run_one_job(runner_env).returncode == 0
    assert queue.get(first["id"])["status"] == "succeeded"

    mirror = _only_mirror(tmp_path / "cache")
    corrupt(mirror)

    second = queue.enqueue(prompt="p", repo_url=url, config=fake(write={"two.txt": "2"}, commit="two"))
    proc = run_one_job(runner_env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(second["id"])
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["commits"]["count"] == 1
    assert "mirror_corrupt_recloning" in proc.stdout


def test_a_cache_dir_that_is_a_file_requeues_the_job_with_the_reason(runner_env, queue, tmp_path):
    """The cache directory is a file (a broken volume mount, say): the iteration says why
    and exits 1 (the supervisor backs off); the job is requeued, and goes through once
    the cache is back."""
    url = make_git_repo(tmp_path / "origin")
    cache = tmp_path / "cache-file"
    cache.write_text("not a directory\n")
    env = {**runner_env, "RUNNER_CACHE_DIR": str(cache), "RUNNER_RETRY_BACKOFF_SECONDS": "0"}
    job = queue.enqueue(prompt="p", repo_url=url, config=fake())
    proc = run_one_job(env)
    assert proc.returncode == 1, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "queued", row
    assert row["error"] == f"the runner failed while running the job: [Errno 17] File exists: '{cache}'"
    cache.unlink()
    assert run_one_job(env).returncode == 0
    assert queue.get(job["id"])["status"] == "succeeded"


def test_a_job_the_runner_fails_on_every_time_ends_failed_instead_of_looping(runner_env, queue, tmp_path):
    """Runner-side faults cost the job no attempt, but one that makes the runner fail every
    time must end: the third such hand-back records it failed, saying why."""
    url = make_git_repo(tmp_path / "origin")
    cache = tmp_path / "cache-file"
    cache.write_text("not a directory\n")
    env = {**runner_env, "RUNNER_CACHE_DIR": str(cache), "RUNNER_RETRY_BACKOFF_SECONDS": "0"}
    job = queue.enqueue(prompt="p", repo_url=url, config=fake())
    for _ in range(2):
        assert run_one_job(env).returncode == 1
        row = queue.get(job["id"])
        assert (row["status"], row["attempts"]) == ("queued", 0), row
    assert run_one_job(env).returncode == 1
    row = queue.get(job["id"])
    assert row["status"] == "failed", row
    assert "the runner failed on this job 3 times, so it is not tried again" in row["error"]


# -- the worktree deleted under a running agent ----------------------------------------

def test_worktree_deleted_under_the_agent_is_retried_with_the_reason_then_succeeds(
        runner_env, queue, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    started = tmp_path / "agent-started"
    # Works after a pause: writes a file in its cwd and commits it.
    agent = (f"/bin/sh -c 'touch {started}; sleep 2; echo work > note.txt && "
             "git add -A && git commit -q -m work'")
    env = {**runner_env, "RUNNER_AGENT_COMMAND": agent, "RUNNER_RETRY_BACKOFF_SECONDS": "0"}
    job = queue.enqueue(prompt="p", repo_url=url, max_attempts=2, config={"agent": "command"})
    proc = start_one_job(env)
    wait_for(started.exists, 30, "the agent to start")
    work = tmp_path / "jobs" / str(job["id"]) / "work"
    assert work.is_dir()
    shutil.rmtree(work)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "queued", row  # requeued: one attempt left
    assert "the agent exited with code" in row["error"] and "note.txt" in row["error"], row["error"]

    started.unlink()
    proc = run_one_job(env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    assert row["result"]["commits"]["count"] == 1


def test_worktree_deleted_under_the_agent_on_its_last_attempt_fails_with_the_reason(
        runner_env, queue, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    pidfile = tmp_path / "agent.pid"
    job = queue.enqueue(prompt="p", repo_url=url, max_attempts=1, config={"agent": "command"})
    # The agent sleeps, then commits in a directory that is gone by then.
    agent = (f"/bin/sh -c 'echo $$ > {pidfile}; sleep 2; git add -A && git commit -q -m x'")
    proc = start_one_job({**runner_env, "RUNNER_AGENT_COMMAND": agent})
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the agent to start")
    shutil.rmtree(tmp_path / "jobs" / str(job["id"]))  # the whole job directory this time
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "failed", row
    assert "the agent exited with code" in row["error"] and "no attempts left" in row["error"], row["error"]
    nxt = queue.enqueue(prompt="p", repo_url=url, config=fake(write={"f": "x"}, commit="ok"))
    assert run_one_job(runner_env).returncode == 0
    assert queue.get(nxt["id"])["status"] == "succeeded"


# -- a job directory removed by someone else while the runner removes it ---------------

def test_removing_a_job_dir_that_vanished_meanwhile_is_not_an_error(tmp_path, monkeypatch):
    """Found by the chaos test: another worker's sweep removed a succeeded job's directory
    while its own iteration was cleaning it up; the iteration crashed (exit 1)."""
    gone = tmp_path / "jobs" / "0b7e6a0e-8f3c-4b7e-9a53-3a4f0d7c2f11"
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: True if p == gone else real_exists(p))
    remove_tree(gone)  # rmtree finds nothing: done, no exception

    half = tmp_path / "jobs" / "half"
    (half / "work" / "sub").mkdir(parents=True)
    real_rmdir = os.rmdir

    def racing_rmdir(path, *a, **kw):  # another remover wins the very last step
        real_rmdir(path, *a, **kw)
        if str(path) == str(half):
            raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(os, "rmdir", racing_rmdir)
    remove_tree(half)
    assert not half.exists()
