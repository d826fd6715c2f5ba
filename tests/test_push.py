"""runner.push: the branch reaches a token-protected remote over loopback HTTP, and the
token is nowhere: logs, job rows, events, the agent's environment, the cache."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
from tests.conftest import fake, make_git_repo, run_one_job
from fakes.git_http import GitHttpServer, bare_copy

TOKEN = "tok-Zq8-very-secret-4411"


def _served(tmp_path: Path) -> Path:
    make_git_repo(tmp_path / "src")
    (tmp_path / "served").mkdir()
    return bare_copy(tmp_path / "src", tmp_path / "served" / "r.git")


def _env(runner_env, **extra):
    return {**runner_env, "RUNNER_ALLOW_HTTP_LOOPBACK": "1",
            "RUNNER_ALLOWED_REPO_HOSTS": "127.0.0.1", **extra}


def _everything_text(tmp_path: Path, db_url: str) -> str:
    chunks = []
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink() and "served" not in path.parts:
            chunks.append(path.read_bytes().decode("utf-8", "replace"))
    with psycopg.connect(db_url) as conn:
        for table in ("jobs", "job_events", "workers"):
            chunks += [r[0] for r in conn.execute(f"SELECT row_to_json(t)::text FROM {table} t")]
    return "\n".join(chunks)


def test_push_with_token_and_no_token_anywhere(queue, runner_env, db_url, tmp_path):
    served = _served(tmp_path)
    with GitHttpServer(tmp_path / "served", token=TOKEN) as srv:
        dump = tmp_path / "agent-env.json"
        job = queue.enqueue(prompt="p", repo_url=srv.url("r.git"), branch="feature/pushed",
                            config={**fake(write={"new.txt": "hello"}, commit="add new",
                                           env_dump=str(dump)),
                                    "push": True, "verify": ["git log -1 --format=%s"]})
        proc = run_one_job(_env(runner_env, RUNNER_GIT_TOKEN=TOKEN))
        assert srv.denied >= 1  # the server asked for credentials, and got them
        assert srv.requests["POST receive-pack"] == 1
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    pushed = row["result"]["pushed"]
    remote_sha = subprocess.run(["git", "-C", str(served), "rev-parse", "refs/heads/feature/pushed"],
                                capture_output=True, text=True, check=True).stdout.strip()
    assert pushed["sha"] == remote_sha == row["result"]["commits"]["head"]
    assert pushed["ref"] == "refs/heads/feature/pushed"
    agent_env = json.loads(dump.read_text())
    assert "RUNNER_GIT_TOKEN" not in agent_env and TOKEN not in json.dumps(agent_env)
    everything = _everything_text(tmp_path, db_url) + proc.stdout + proc.stderr
    assert "add new" in everything  # the search does see the job's data…
    assert TOKEN not in everything  # …but never the token


def test_failed_push_ends_failed_with_a_redacted_reason(queue, runner_env, tmp_path):
    served = _served(tmp_path)
    hook = served / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch protection: pushes need a review' >&2\nexit 1\n")
    hook.chmod(0o755)
    with GitHttpServer(tmp_path / "served", token=TOKEN, push_only=True) as srv:
        rejected = queue.enqueue(prompt="p", repo_url=srv.url("r.git"),
                                 config={**fake(write={"a": "1"}, commit="c"), "push": True})
        run_one_job(_env(runner_env, RUNNER_GIT_TOKEN=TOKEN))
        hook.unlink()
        wrong = "wrong-token-77aa31"
        unauthorised = queue.enqueue(prompt="p", repo_url=srv.url("r.git"),
                                     config={**fake(write={"b": "1"}, commit="c"), "push": True})
        run_one_job(_env(runner_env, RUNNER_GIT_TOKEN=wrong, RUNNER_GIT_RETRY_ATTEMPTS="1"))
    row = queue.get(rejected["id"])
    assert row["status"] == "failed"
    assert "pushing branch" in row["error"] and "pushes need a review" in row["error"]
    assert "commits stay in the runner's cache" in row["error"]
    row = queue.get(unauthorised["id"])
    assert row["status"] == "failed" and "(auth)" in row["error"], row["error"]
    assert wrong not in row["error"] and wrong not in json.dumps(row["result"])
