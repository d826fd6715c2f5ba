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
