"""A pipeline run by real iterations (python -m runner.one_job, the fake agent, real git):
steps on one branch run in order, each from the previous step's head; a failed step fails
the steps after it without running them."""

from __future__ import annotations

import subprocess

import psycopg

from runner import client, repo_cache
from tests.conftest import fake, make_git_repo, run_one_job


def test_implement_review_fix_on_one_branch(db_url, queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    with psycopg.connect(db_url) as conn:  # the whole pipeline in one transaction
        implement = client.enqueue(conn, prompt="implement", repo_url=url, branch="issue-12",
                                   config=fake(write={"impl.txt": "v1"}, commit="implement"))
        review = client.enqueue(conn, prompt="review", repo_url=url, branch="issue-12",
                                depends_on=[implement.id],
                                config=fake(write={"review.txt": "ok"}, commit="review"))
        fix = client.enqueue(conn, prompt="fix", repo_url=url, branch="issue-12",
                             depends_on=[review.id],
                             config=fake(write={"impl.txt": "v2"}, commit="fix"))
    order = []
    for _ in range(3):
        proc = run_one_job(runner_env)
        assert proc.returncode == 0, proc.stderr
        done = [j for j in (implement, review, fix) if queue.get(j.id)["status"] == "succeeded"]
        order.append(len(done))
    assert order == [1, 2, 3]
    mirror = repo_cache.mirror_dir(tmp_path / "cache", url)
    log = subprocess.run(["git", "-C", str(mirror), "log", "--format=%s", "issue-12"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert log[:3] == ["fix", "review", "implement"]
    for job in (implement, review, fix):  # each step's result lists only its own commit
        assert queue.get(job.id)["result"]["commits"]["count"] == 1


def test_a_failed_step_fails_the_rest_without_running_them(db_url, queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    marker = tmp_path / "ran"
    with psycopg.connect(db_url) as conn:
        implement = client.enqueue(conn, prompt="implement", repo_url=url, branch="b",
                                   max_attempts=1, config=fake(exit=2, stderr=["cannot build"]))
        review = client.enqueue(conn, prompt="review", repo_url=url, branch="b",
                                depends_on=[implement.id],
                                config=fake(write={str(marker): "x"}))
        fix = client.enqueue(conn, prompt="fix", repo_url=url, branch="b",
                             depends_on=[review.id], config=fake(write={str(marker): "x"}))
    run_one_job(runner_env)
    assert queue.get(implement.id)["status"] == "failed"
    run_one_job(runner_env)
    for job, dep in ((review, implement), (fix, review)):
        row = queue.get(job.id)
        assert row["status"] == "failed"
        assert row["error"].startswith(f"dependency {dep.id} failed")
        assert "claimed" not in [e["event"] for e in queue.events(job.id)]
    assert not marker.exists()
