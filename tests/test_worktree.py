"""Worktrees from the shared cache, as real jobs: reuse, concurrency, branch policy,
cleanup and the sweep (runner.worktree, runner.sweep)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

from tests.conftest import fake, make_git_repo, run_one_job, start_one_job
from fakes.git_http import GitHttpServer, bare_copy
from gitkit import commit

from runner import repo_cache


def _events(out: str) -> list[dict]:
    found = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


def _names(out: str) -> list[str]:
    return [e.get("event") for e in _events(out)]


def test_cache_reused_two_worktrees_at_once_then_cleaned(queue, runner_env, tmp_path):
    make_git_repo(tmp_path / "src", {"README.md": "hi\n", "lib/a.py": "x = 1\n"})
    (tmp_path / "served").mkdir()
    bare_copy(tmp_path / "src", tmp_path / "served" / "r.git")
    env = {**runner_env, "RUNNER_ALLOW_HTTP_LOOPBACK": "1", "RUNNER_ALLOWED_REPO_HOSTS": "127.0.0.1"}
    with GitHttpServer(tmp_path / "served") as srv:
        url = srv.url("r.git")
        jobs = [queue.enqueue(prompt="p", repo_url=url,
                              config=fake(sleep=3, write={f"f{i}.txt": "x"}, commit=f"job {i}"))
                for i in range(2)]
        procs = [start_one_job(env, RUNNER_WORKER_ID=f"w{i}") for i in range(2)]
        both_live = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not both_live:
            live = [p for p in (tmp_path / "jobs").glob("*/work/.git")]
            both_live = len(live) == 2
            time.sleep(0.05)
        outs = [p.communicate(timeout=60)[0] for p in procs]
        assert both_live, outs
        names = _names(outs[0]) + _names(outs[1])
        assert names.count("mirror_cloned") == 1
        caches = sorted(e["cache"] for o in outs for e in _events(o) if e.get("event") == "worktree_created")
        assert caches == ["cloned", "fetched"]
        # The clone (fetch + asking for the remote's HEAD) and one fetch; nothing else.
        assert srv.requests["GET upload-pack"] == 3
        # A third job: the mirror is reused, not cloned again.
        third = queue.enqueue(prompt="p", repo_url=url, config=fake(write={"t": "3"}, commit="three"))
        out = run_one_job(env).stdout
        assert "mirror_cloned" not in _names(out) and "worktree_created" in _names(out)
    for job in [*jobs, third]:
        row = queue.get(job["id"])
        assert row["status"] == "succeeded", row["error"]
        assert row["result"]["commits"]["count"] == 1
        assert row["result"]["commits"]["diffstat"]["files_changed"] == 1
    # No job's directory is left; only the spare checkout for the next job (runner/spare.py).
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [".spare"]
    spares = list((tmp_path / "jobs" / ".spare").iterdir())
    assert len(spares) == 1
    mirror = repo_cache.mirror_dir(tmp_path / "cache", url)
    listed = subprocess.run(["git", "-C", str(mirror), "worktree", "list", "--porcelain"],
                            capture_output=True, text=True).stdout
    assert listed.count("worktree ") == 2  # the bare mirror itself and the spare
    assert f"worktree {spares[0]}/work\n" in listed


def test_branch_policy(queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    commit(tmp_path / "origin", {"v.txt": "1"}, "v1")
    subprocess.run(["git", "-C", str(tmp_path / "origin"), "tag", "v1"], check=True)
    # A job's own earlier attempt with on_retry "restart": the branch is reset, not
    # stacked on (the default, "continue": tests/test_workspace_safety.py).
    retried = queue.enqueue(prompt="p", repo_url=url, branch="feature/x", max_attempts=2,
                            config=fake(write={"a.txt": "a"}, commit="attempt", exit=1))
    env = {**runner_env, "RUNNER_RETRY_BACKOFF_SECONDS": "0"}
    run_one_job(env)
    assert queue.get(retried["id"])["status"] == "queued"
    with queue.conn.cursor() as cur:  # second attempt succeeds
        cur.execute("UPDATE jobs SET config = %s WHERE id = %s",
                    (json.dumps({**fake(write={"a.txt": "b"}, commit="attempt 2"),
                                 "on_retry": "restart"}), retried["id"]))
    out = run_one_job(env).stdout
    assert "branch_reset_previous_attempt" in _names(out)
    row = queue.get(retried["id"])
    assert row["status"] == "succeeded" and row["result"]["commits"]["count"] == 1
    # The next job on the same branch builds on that work (it never throws it away).
    other = queue.enqueue(prompt="p", repo_url=url, branch="feature/x",
                          config=fake(write={"c.txt": "c"}, commit="next step"))
    out = run_one_job(env).stdout
    assert "branch_continued_from_earlier_job" in _names(out)
    row = queue.get(other["id"])
    assert row["status"] == "succeeded" and row["result"]["commits"]["count"] == 1
    mirror = repo_cache.mirror_dir(tmp_path / "cache", url)
    log = subprocess.run(["git", "-C", str(mirror), "log", "--format=%s", "feature/x"],
                         capture_output=True, text=True).stdout.split("\n")
    assert log[:2] == ["next step", "attempt 2"]
    # A branch with no work of its own is simply reused; base_ref may be a tag.
    tagged = queue.enqueue(prompt="p", repo_url=url, branch="fresh", base_ref="v1", config=fake())
    missing = queue.enqueue(prompt="p", repo_url=url, base_ref="nope", config=fake())
    run_one_job(env), run_one_job(env)
    assert queue.get(tagged["id"])["status"] == "succeeded"
    assert "is not a branch, tag or commit" in queue.get(missing["id"])["error"]


def test_failed_worktree_kept_then_swept(queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    job = queue.enqueue(prompt="p", repo_url=url, max_attempts=1,
                        config=fake(write={"a.txt": "a"}, commit="c", exit=2))
    run_one_job(runner_env)
    row = queue.get(job["id"])
    assert row["status"] == "failed"
    kept = tmp_path / "jobs" / str(job["id"]) / "work"
    assert (kept / "a.txt").is_file()
    orphan = tmp_path / "jobs" / str(uuid.uuid4())
    (orphan / "work").mkdir(parents=True)
    stranger = tmp_path / "jobs" / "not-a-job"
    stranger.mkdir()
    # Within the keep period only the orphan goes.
    out = run_one_job(runner_env).stdout
    assert not orphan.exists() and kept.exists() and stranger.exists()
    # After it, the failed job's directory, its registration and its old branch go too.
    out = run_one_job(runner_env, RUNNER_KEEP_FAILED_HOURS="0", RUNNER_KEEP_BRANCH_HOURS="0").stdout
    assert not kept.parent.exists() and stranger.exists()
    assert "job_branch_removed" in _names(out)
    mirror = repo_cache.mirror_dir(tmp_path / "cache", url)
    refs = subprocess.run(["git", "-C", str(mirror), "for-each-ref", "refs/heads"],
                          capture_output=True, text=True).stdout
    assert refs == ""
    assert "runnerjob" not in (mirror / "config").read_text()


def test_job_without_repository_gets_an_empty_dir(queue, runner_env, tmp_path):
    job = queue.enqueue(prompt="p", config=fake(write={"x.txt": "1"}))
    run_one_job(runner_env)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded" and row["result"]["commits"]["count"] == 0
    assert not (tmp_path / "jobs" / str(job["id"])).exists()


def test_a_registration_left_behind_gits_back_is_pruned_when_in_the_way(tmp_path):
    """The sweep prunes stale registrations before each claim; prepare prunes only when
    `worktree add` trips over one (here: the job's own directory removed by hand)."""
    import shutil

    from gitkit import settings

    from runner import worktree
    from runner.jobconfig import parse

    url = make_git_repo(tmp_path / "src", {"README.md": "hi\n"})
    s = settings(tmp_path)
    job = {"id": uuid.uuid4(), "repo_url": url, "config": {}}
    first = worktree.prepare(job, parse({}), s)
    assert (first.path / "README.md").read_text() == "hi\n"
    shutil.rmtree(first.job_dir)  # git still lists the worktree, and its branch as checked out
    again = worktree.prepare(job, parse({}), s)
    assert again.path == first.path and (again.path / "README.md").read_text() == "hi\n"
    listed = subprocess.run(["git", "-C", str(again.mirror), "worktree", "list", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    assert listed.count(f"worktree {again.path}") == 1


def test_the_branch_record_is_one_section_whoever_wrote_it_before(tmp_path):
    # _record_branch appends in Python; what git reads back is one value per key, the
    # latest job's, also after a section of an earlier job and a file without a final newline.
    from gitkit import settings

    from runner import worktree

    mirror = tmp_path / "m.git"
    subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    config = mirror / "config"
    config.write_text(config.read_text().rstrip("\n"))
    s = settings(tmp_path)
    worktree._record_branch(mirror, "runner/ab.c", "job-1", {}, s)
    listed = dict(repo_cache._list_config(mirror))
    worktree._record_branch(mirror, "runner/ab.c", "job-2", listed, s)

    def values(key):
        return subprocess.run(["git", "config", "--file", str(config), "--get-all", key],
                              capture_output=True, text=True).stdout.split()
    assert values("branch.runner/ab.c.runnerjob") == ["job-2"]
    assert len(values("branch.runner/ab.c.runnercreated")) == 1
    assert values("core.bare") == ["true"]
