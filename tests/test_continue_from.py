"""config.continue_from run by real iterations (the fake agent, real git): each step starts
from the previous step's head, on its branch unless it names another; it implies
depends_on (the client and a trigger for a plain INSERT); what cannot be continued ends
failed with a sentence."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest

from runner import client, repo_cache
from runner.errors import InvalidJob
from tests.conftest import fake, make_git_repo, run_one_job


def _subjects(mirror, ref: str) -> list[str]:
    return subprocess.run(["git", "-C", str(mirror), "log", "--format=%s", ref],
                          capture_output=True, text=True, check=True).stdout.split("\n")[:-1]


def test_implement_review_fix_each_from_the_previous_head(db_url, queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    log = tmp_path / "log.jsonl"
    with psycopg.connect(db_url) as conn:
        implement = client.enqueue(conn, prompt="implement it", repo_url=url,
                                   config=fake(write={"impl.txt": "v1"}, commit="implement"))
        review = client.enqueue(conn, prompt="review it", config={
            **fake(log_to=str(log), write={"review.txt": "ok"}, commit="review"),
            "continue_from": str(implement.id)})
        fix = client.enqueue(conn, prompt="fix it", repo_url=url, branch="fix-branch", config={
            **fake(log_to=str(log), write={"impl.txt": "v2"}, commit="fix"),
            "continue_from": str(review.id).upper()})
    assert queue.get(review.id)["depends_on"] == [implement.id]  # implied
    for _ in range(3):
        assert run_one_job(runner_env).returncode == 0
    rows = {name: queue.get(j.id) for name, j in (("implement", implement), ("review", review),
                                                    ("fix", fix))}
    assert [r["status"] for r in rows.values()] == ["succeeded"] * 3, [r["error"] for r in rows.values()]
    heads = {name: r["result"]["commits"]["head"] for name, r in rows.items()}
    branch = f"runner/{str(implement.id)[:8]}"
    # review: on the implement step's branch, from its head; fix: its own branch, from review's
    assert rows["review"]["result"]["commits"]["branch"] == branch
    assert rows["review"]["result"]["commits"]["base"] == heads["implement"]
    assert rows["fix"]["result"]["commits"]["branch"] == "fix-branch"
    assert rows["fix"]["result"]["commits"]["base"] == heads["review"]
    for r in rows.values():  # each step's result lists only its own commit
        assert r["result"]["commits"]["count"] == 1
    mirror = repo_cache.mirror_dir(tmp_path / "cache", url)
    assert _subjects(mirror, "fix-branch")[:3] == ["fix", "review", "implement"]
    assert _subjects(mirror, branch)[:2] == ["review", "implement"]
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert seen[0]["subjects"][0] == "implement" and seen[1]["subjects"][0] == "review"
    # not a resumable agent: told what the earlier step did in a note after its prompt
    assert seen[0]["prompt"].startswith("review it") and f"continues job {implement.id}" in seen[0]["prompt"]
    assert "> implement it" in seen[0]["prompt"] and "- implement" in seen[0]["prompt"]


def test_a_plain_insert_waits_for_it_and_a_failed_step_fails_its_dependents(db_url, queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    marker = tmp_path / "ran"
    implement = queue.enqueue(prompt="implement", repo_url=url, max_attempts=1,
                              config=fake(exit=2, stderr=["cannot build"]))
    with psycopg.connect(db_url, autocommit=True) as conn:  # what a web app in any language runs
        review_id = conn.execute(
            "INSERT INTO jobs (prompt, config) VALUES ('review', %s) RETURNING id",
            (json.dumps({**fake(write={str(marker): "x"}), "continue_from": str(implement["id"])}),)
        ).fetchone()[0]
    assert queue.get(review_id)["depends_on"] == [implement["id"]]
    run_one_job(runner_env)
    run_one_job(runner_env)
    row = queue.get(review_id)
    assert row["status"] == "failed" and row["error"].startswith(f"dependency {implement['id']} failed")
    assert not marker.exists()


def test_a_job_that_is_not_succeeded_is_not_continued_from(db_url, queue, runner_env, tmp_path):
    earlier = queue.enqueue(prompt="never run", config={"agent": "stub"}, queue="elsewhere")
    job = queue.enqueue(prompt="review", config={**fake(), "continue_from": str(earlier["id"])})
    with psycopg.connect(db_url, autocommit=True) as conn:  # a row written past the trigger
        conn.execute("UPDATE jobs SET depends_on = NULL WHERE id = %s", (job["id"],))
    run_one_job(runner_env)
    row = queue.get(job["id"])
    assert row["status"] == "failed"
    assert row["error"] == (f"config.continue_from names job {earlier['id']}, which is queued, not "
                            f"succeeded; a job continues only from a succeeded one (put it in "
                            f"depends_on too, as runner.client.enqueue does, so that this job "
                            f"waits for it)")


def test_another_repository_is_refused_at_claim_time(queue, runner_env, tmp_path):
    one, other = make_git_repo(tmp_path / "one"), make_git_repo(tmp_path / "other")
    earlier = queue.enqueue(prompt="implement", repo_url=one, config=fake())
    run_one_job(runner_env)
    job = queue.enqueue(prompt="review", repo_url=other,
                        config={**fake(), "continue_from": str(earlier["id"])})
    run_one_job(runner_env)
    row = queue.get(job["id"])
    assert row["status"] == "failed" and "which worked in" in row["error"], row["error"]


def test_the_client_checks_continue_from(db_url):
    with psycopg.connect(db_url) as conn:
        with pytest.raises(InvalidJob, match="which does not exist"):
            client.enqueue(conn, prompt="p", config={"continue_from": "0" * 8 + "-0000-0000-0000-" + "0" * 12})
        earlier = client.enqueue(conn, prompt="p", config={"agent": "stub"})
        with pytest.raises(InvalidJob, match="leave base_ref empty"):
            client.enqueue(conn, prompt="p", base_ref="main", config={"continue_from": str(earlier.id)})
        with pytest.raises(InvalidJob, match="config.continue_from must be a job id"):
            client.enqueue(conn, prompt="p", config={"continue_from": "job-1"})


def test_a_plain_insert_naming_no_job_or_no_id_ends_failed_with_a_sentence(db_url, queue, runner_env):
    gone = "0b0e7e7e-0000-4000-8000-000000000000"
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = [conn.execute("INSERT INTO jobs (prompt, config) VALUES ('p', %s) RETURNING id",
                            (json.dumps({**fake(), "continue_from": value}),)).fetchone()[0]
               for value in (gone, 5)]
    run_one_job(runner_env)
    run_one_job(runner_env)
    missing, number = (queue.get(i) for i in ids)
    assert missing["status"] == "failed" and missing["error"].startswith(f"dependency {gone} does not exist")
    assert number["status"] == "failed"
    assert number["error"] == "config.continue_from must be a job id (a UUID), got 5"
