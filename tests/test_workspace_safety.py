"""The job's git workspace keeps the agent's work, as real jobs through
``python -m runner.one_job`` with the fake agent: a worker that lost its claim touches
nothing, leftovers are committed by the runner, a failed attempt's work is continued."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from runner import repo_cache
from tests.agents.proc import alive, pid_in, wait_for
from tests.conftest import fake, run_one_job, start_one_job


def _mirror(env: dict[str, str], url: str) -> Path:
    return repo_cache.mirror_dir(Path(env["RUNNER_CACHE_DIR"]), url)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


def _tree(path: Path) -> dict[str, str]:
    """Every path under ``path`` with the content of its files (output files: name only)."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        if p.is_file() and not p.is_symlink() and p.name not in ("agent.stdout", "agent.stderr"):
            out[rel] = p.read_bytes().hex()
        else:
            out[rel] = "dir" if p.is_dir() else "other"
    return out


def _row_and_events(db_url: str, job_id) -> tuple[dict, list[dict]]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
        events = conn.execute("SELECT * FROM job_events WHERE job_id = %s ORDER BY id",
                              (job_id,)).fetchall()
    return row, events


def test_a_stolen_claim_leaves_row_events_directory_and_branch_untouched(
        queue, runner_env, git_repo, db_url, tmp_path):
    """Another worker takes the job over (its claim token replaces ours) while the agent
    runs, with a shared job root: the agent is stopped, and this worker writes nothing
    (no row, no event, no leftover commit) and removes nothing (directory, branch,
    worktree registration) — all of it is the new owner's live workspace now."""
    pidfile = tmp_path / "agent.pid"
    job = queue.enqueue(prompt="long", repo_url=git_repo, config=fake(
        pidfile=str(pidfile), write={"a.txt": "committed\n"}, commit="agent work",
        write_after={"b.txt": "not committed yet\n"}, sleep=60))
    job_dir = Path(runner_env["RUNNER_JOB_ROOT"]) / str(job["id"])
    proc = start_one_job(runner_env, RUNNER_LEASE_SECONDS="3")
    agent = pid_in(pidfile)
    wait_for(lambda: (job_dir / "work" / "b.txt").exists(), what="the agent's uncommitted file")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET claim_token = gen_random_uuid(), claimed_by = 'other-worker' "
                     "WHERE id = %s", (job["id"],))
    mirror = _mirror(runner_env, git_repo)
    branch = f"refs/heads/runner/{str(job['id'])[:8]}"
    before = (_row_and_events(db_url, job["id"]), _tree(job_dir), _git(mirror, "rev-parse", branch),
              _git(mirror, "worktree", "list", "--porcelain"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert not alive(agent)
    assert "claim_lost_workspace_left_alone" in out
    after = (_row_and_events(db_url, job["id"]), _tree(job_dir), _git(mirror, "rev-parse", branch),
             _git(mirror, "worktree", "list", "--porcelain"))
    assert after[0] == before[0]  # the row and its events, every column
    assert after[1] == before[1] and "payload.json" in after[1] and "work/b.txt" in after[1]
    assert after[2:] == before[2:]  # the branch head (no leftover commit), the registration


# -- B: leftovers are committed by the runner ------------------------------------------

def _show(mirror: Path, rev: str, path: str) -> str:
    return _git(mirror, "show", f"{rev}:{path}")


def test_leftovers_are_committed_by_the_runner_on_the_branch(queue, runner_env, tmp_path):
    """Tracked edits, a deletion and a new file the agent did not commit end up in one
    commit of the runner's own, listed in result.commits as the runner's; ignored files
    and files over the size limit stay out (the big one is listed, its directory kept)."""
    from tests.conftest import make_git_repo
    url = make_git_repo(tmp_path / "origin", {"README.md": "# demo\n", "old.txt": "old\n",
                                              ".gitignore": "build/\n"})
    job = queue.enqueue(prompt="p", repo_url=url, config={
        "verify": [["sh", "-c", "git status --porcelain > ../status.txt"]], **fake(
        write={"first.txt": "the agent's own commit\n"}, commit="agent commit",
        write_after={"README.md": "# changed\n", "src/new.py": "print('new')\n",
                     "build/out.bin": "ignored\n", "big.bin": "x" * 2048},
        run=["rm old.txt"])})
    proc = run_one_job(runner_env, RUNNER_LEFTOVER_MAX_FILE_BYTES="1024")
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    commits, left = row["result"]["commits"], row["result"]["leftovers"]
    assert commits["count"] == 2
    newest, older = commits["list"]
    assert newest["by"] == "runner" and newest["subject"] == "runner: changes the agent left uncommitted"
    assert "by" not in older and older["subject"] == "agent commit"
    assert left["committed"] == newest["sha"] == commits["head"]
    assert sorted(left["files"]) == ["README.md", "old.txt", "src/new.py"]
    assert left["skipped_large"] == [{"path": "big.bin", "bytes": 2048}]
    mirror = _mirror(runner_env, url)
    sha = newest["sha"]
    assert _show(mirror, sha, "README.md") == "# changed\n"
    assert _show(mirror, sha, "src/new.py") == "print('new')\n"
    files = _git(mirror, "ls-tree", "-r", "--name-only", sha).split()
    assert "old.txt" not in files and "big.bin" not in files and "build/out.bin" not in files
    author = _git(mirror, "log", "-1", "--format=%an <%ae>|%s", sha)
    assert author.startswith("runner <runner-leftovers@localhost>|")
    # The big file was not committed: its directory stays, and says why.
    work = Path(runner_env["RUNNER_JOB_ROOT"]) / str(job["id"]) / "work"
    assert (work / "big.bin").stat().st_size == 2048
    assert left["kept_in"] == str(work.parent)
    # Verify ran after the runner's commit and saw a clean tree (but the big, untracked file).
    assert (work.parent / "status.txt").read_text() == "?? big.bin\n"
    # Nothing left over: no runner commit, and the succeeded job's directory goes.
    plain = queue.enqueue(prompt="p", repo_url=url, config=fake(write={"a.txt": "a"}, commit="all"))
    run_one_job(runner_env)
    r = queue.get(plain["id"])["result"]
    assert "leftovers" not in r and r["commits"]["count"] == 1
    assert not (Path(runner_env["RUNNER_JOB_ROOT"]) / str(plain["id"])).exists()


def test_commit_leftovers_false_keeps_a_patch_in_the_job_directory(queue, runner_env, git_repo, tmp_path):
    job = queue.enqueue(prompt="p", repo_url=git_repo, config={
        **fake(write_after={"README.md": "# patched\n", "new.txt": "new\n"}),
        "commit_leftovers": False})
    proc = run_one_job(runner_env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    left = row["result"]["leftovers"]
    assert left["committed"] is None and row["result"]["commits"]["count"] == 0
    patch = Path(left["patch"])
    assert patch.parent == Path(runner_env["RUNNER_JOB_ROOT"]) / str(job["id"]) and patch.is_file()
    # The patch is the agent's work: it applies to the base and gives the agent's files.
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", git_repo, str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "apply", str(patch)], check=True)
    assert (clone / "README.md").read_text() == "# patched\n" and (clone / "new.txt").read_text() == "new\n"
    # The sweep keeps that directory within the keep period, like a failed job's.
    run_one_job(runner_env)
    assert patch.is_file()


def test_config_and_hooks_an_agent_planted_do_not_run_at_the_leftover_commit(
        queue, runner_env, git_repo, tmp_path):
    """The agent wires a clean filter and hooks into the (shared) mirror: the runner's
    leftover commit runs none of them and stores the file as the agent left it."""
    pwned = tmp_path / "pwned"
    job = queue.enqueue(prompt="p", repo_url=git_repo, config=fake(
        write_after={".gitattributes": "* filter=evil\n", "x.txt": "plain\n"},
        run=[f"git config filter.evil.clean 'touch {pwned}; cat'",
             f"git config core.fsmonitor 'touch {pwned}'",
             f"printf '#!/bin/sh\\ntouch {pwned}\\n' > \"$(git rev-parse --git-common-dir)/hooks/pre-commit\"",
             "chmod +x \"$(git rev-parse --git-common-dir)/hooks/pre-commit\""]))
    proc = run_one_job(runner_env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    sha = row["result"]["leftovers"]["committed"]
    assert sha and _show(_mirror(runner_env, git_repo), sha, "x.txt") == "plain\n"
    assert not pwned.exists()


def test_leftovers_are_pushed_with_the_branch(queue, runner_env, tmp_path):
    from fakes.git_http import GitHttpServer, bare_copy
    from tests.conftest import make_git_repo
    make_git_repo(tmp_path / "src")
    (tmp_path / "served").mkdir()
    served = bare_copy(tmp_path / "src", tmp_path / "served" / "r.git")
    with GitHttpServer(tmp_path / "served") as srv:
        job = queue.enqueue(prompt="p", repo_url=srv.url("r.git"), branch="feature/left",
                            config={**fake(write_after={"new.txt": "uncommitted\n"}), "push": True})
        proc = run_one_job(runner_env, RUNNER_ALLOW_HTTP_LOOPBACK="1",
                           RUNNER_ALLOWED_REPO_HOSTS="127.0.0.1")
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    sha = row["result"]["leftovers"]["committed"]
    assert row["result"]["pushed"]["sha"] == sha
    assert _git(served, "show", "refs/heads/feature/left:new.txt") == "uncommitted\n"


# -- C: an attempt that did not succeed is continued -----------------------------------

def _starts(log: Path) -> list[dict]:
    import json
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_timed_out_attempt_is_continued_from_its_commit_and_leftovers(queue, runner_env, git_repo,
                                                                         tmp_path):
    """The first attempt commits once, leaves a file uncommitted and hangs until its
    timeout; the retry starts from that commit plus the runner's leftover commit, and its
    prompt says what the earlier attempt left."""
    log = tmp_path / "starts.jsonl"
    job = queue.enqueue(prompt="Do the work.", repo_url=git_repo, max_attempts=2, config={
        **fake(log_to=str(log), write={"a.txt": "a\n"}, commit="first step",
               write_after={"b.txt": "half done\n"}, sleep_unless_exists="a.txt"),
        "timeout_s": 8})
    env = {**runner_env, "RUNNER_RETRY_BACKOFF_SECONDS": "0"}
    proc = run_one_job(env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["error"] == "timed out after 8 s"
    first = row["result"]["commits"]
    assert [c["subject"] for c in first["list"]] == ["runner: changes the agent left uncommitted",
                                                     "first step"]
    proc = run_one_job(env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    one, two = _starts(log)
    assert one["subjects"] == ["initial"]
    assert two["subjects"] == ["runner: changes the agent left uncommitted", "first step", "initial"]
    assert "Note from the runner: this job was started before" in two["prompt"]
    assert "timed out after 8 s" in two["prompt"] and "- first step" in two["prompt"]
    assert two["prompt"].startswith("Do the work.")
    # The job's commits are both attempts' work, counted from the base.
    assert row["result"]["commits"]["count"] == 2 and row["result"]["commits"]["head"] == first["head"]


def test_on_retry_restart_starts_from_the_base(queue, runner_env, git_repo, tmp_path):
    log = tmp_path / "starts.jsonl"
    job = queue.enqueue(prompt="Do the work.", repo_url=git_repo, max_attempts=2, config={
        **fake(log_to=str(log), write={"a.txt": "a\n"}, commit="first step",
               sleep_unless_exists="a.txt"),
        "timeout_s": 8, "on_retry": "restart"})
    env = {**runner_env, "RUNNER_RETRY_BACKOFF_SECONDS": "0"}
    run_one_job(env)
    queue.conn.execute("UPDATE jobs SET config = jsonb_set(config, '{fake,sleep_unless_exists}', "
                       "'\"README.md\"') WHERE id = %s", (job["id"],))  # the retry does not hang
    run_one_job(env)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    assert [s["subjects"] for s in _starts(log)] == [["initial"], ["initial"]]
    assert "Note from the runner" not in _starts(log)[1]["prompt"]


def test_leftovers_of_an_attempt_killed_with_its_iteration_are_kept(queue, runner_env, git_repo, tmp_path):
    """SIGKILL of the iteration: nobody committed the agent's leftovers. The next attempt
    commits them onto the branch before it starts from there."""
    import os
    import signal
    log, pidfile = tmp_path / "starts.jsonl", tmp_path / "agent.pid"
    job = queue.enqueue(prompt="p", repo_url=git_repo, config=fake(
        log_to=str(log), pidfile=str(pidfile), write_after={"c.txt": "unsaved\n"},
        sleep_unless_exists="c.txt"))
    proc = start_one_job(runner_env, RUNNER_LEASE_SECONDS="2")
    work = Path(runner_env["RUNNER_JOB_ROOT"]) / str(job["id"]) / "work"
    wait_for(lambda: (work / "c.txt").exists(), what="the agent's file")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.kill(pid_in(pidfile), signal.SIGKILL)
    wait_for(lambda: run_one_job(runner_env).returncode == 0 and
             queue.get(job["id"])["status"] == "succeeded", timeout=60, what="the retry")
    row = queue.get(job["id"])
    assert row["result"]["previous_attempt_leftovers"]["files"] == ["c.txt"]
    assert _starts(log)[-1]["subjects"] == ["runner: changes the agent left uncommitted", "initial"]


def test_a_sigterm_rollback_keeps_the_attempts_work_for_the_next(queue, runner_env, git_repo, tmp_path):
    import signal
    log = tmp_path / "starts.jsonl"
    job = queue.enqueue(prompt="p", repo_url=git_repo, config=fake(
        log_to=str(log), write={"a.txt": "a\n"}, commit="before the stop",
        write_after={"b.txt": "unsaved\n"}, sleep_unless_exists="a.txt"))
    proc = start_one_job(runner_env, RUNNER_LEASE_SECONDS="3")
    work = Path(runner_env["RUNNER_JOB_ROOT"]) / str(job["id"]) / "work"
    wait_for(lambda: (work / "b.txt").exists(), what="the agent's file")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0
    assert row["result"]["leftovers"]["files"] == ["b.txt"]
    assert row["result"]["commits"]["count"] == 2
    proc = run_one_job(runner_env)
    assert queue.get(job["id"])["status"] == "succeeded", proc.stdout[-3000:]
    assert _starts(log)[-1]["subjects"] == ["runner: changes the agent left uncommitted",
                                            "before the stop", "initial"]
