"""Questions and answers: BLOCKED.md's format, runner_answer() (the one way to answer, for
the CLI and the web app), and real iterations (the fake agent, real git) that go on from
the answer on the same branch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import pytest

from runner import continuation, question, repo_cache
from runner.cli import main as cli
from tests.conftest import fake, run_one_job

ASKED = "Which database should the migration target?\n\n- [ ] PostgreSQL 16\n- [x] SQLite\n"


def test_options_are_task_list_lines_and_the_rest_is_the_question():
    parsed = question.parse("Which database?\nThe docs disagree.\n\n- [ ] PostgreSQL 16\n"
                            "* [x] SQLite, for the tests only\n-  not an option\n")
    assert parsed == {"question": "Which database?\nThe docs disagree.\n\n-  not an option",
                      "options": ["PostgreSQL 16", "SQLite, for the tests only"]}
    assert question.parse("  \n") == {"question": question.EMPTY}
    assert question.parse("- [ ] A\n- [ ] B") == {"question": "Choose one:", "options": ["A", "B"]}


def test_a_hostile_question_is_capped_and_redacted(monkeypatch):
    monkeypatch.setenv("RUNNER_GIT_TOKEN", "ghp_" + "s3cr3t" * 6)
    from runner import secrets
    secrets.install(None)
    try:
        many = "\n".join(f"- [ ] option {i} " + "x" * 1000 for i in range(50))
        parsed = question.parse("q " * 20000 + "ghp_" + "s3cr3t" * 6 + "\n" + many)
        assert len(parsed["options"]) == question.MAX_OPTIONS
        assert all(len(o) <= question.MAX_OPTION_CHARS for o in parsed["options"])
        assert len(parsed["question"]) < question.MAX_QUESTION_CHARS + 100
        assert "s3cr3t" not in json.dumps(parsed)
    finally:
        secrets.install(None)


def test_the_answer_reaches_only_the_attempt_it_was_given_for():
    job = {"attempts": 2, "answer": {"text": "Use PostgreSQL.", "question": "Which one?",
                                     "options": ["PostgreSQL", "SQLite"], "attempt": 2}}
    message = continuation.resume_message(job, {"count": 0})
    assert "Use PostgreSQL." in message and "> Which one?" in message and "- [ ] SQLite" in message
    assert "Use PostgreSQL." in continuation.note(job, {"count": 0})
    later = {**job, "attempts": 3}  # a retry after the answered attempt: already in the session
    assert "Use PostgreSQL." not in continuation.resume_message(later, {"count": 0})
    assert continuation.answer_note(later) == ""


def _blocked(queue, git_repo, runner_env, marker: Path, log: Path, **extra):
    # Blocked until the answer's marker exists; every attempt logs its prompt and branch.
    job = queue.enqueue(prompt="Migrate the schema.", repo_url=git_repo, max_attempts=1, config=fake(
        log_to=str(log), write={"work.txt": "started\n"}, commit="work started",
        run=[f"test -f {marker} || printf '{ASKED}' > BLOCKED.md"], **extra))
    assert run_one_job(runner_env).returncode == 0
    return job


def test_answer_requeues_the_blocked_job_without_spending_an_attempt(runner_env, queue, git_repo, tmp_path):
    marker, log = tmp_path / "answered", tmp_path / "log.jsonl"
    job = _blocked(queue, git_repo, runner_env, marker, log)
    row = queue.get(job["id"])
    assert row["status"] == "blocked" and row["attempts"] == 1
    assert row["result"]["question"] == "Which database should the migration target?"
    assert row["result"]["options"] == ["PostgreSQL 16", "SQLite"]

    assert queue.answer(job["id"], "PostgreSQL 16, please.", by="test") is not None
    row = queue.get(job["id"])
    assert row["status"] == "queued" and row["attempts"] == 0 and row["error"] is None
    assert row["answer"]["text"] == "PostgreSQL 16, please." and row["answer"]["attempt"] == 1
    assert queue.answer(job["id"], "again") is None  # not blocked any more: nothing changes

    marker.write_text("x")
    assert run_one_job(runner_env).returncode == 0
    row = queue.get(job["id"])
    # max_attempts=1, and the answered attempt still ran: the question cost no attempt
    assert row["status"] == "succeeded", row["error"]
    second = [json.loads(line) for line in log.read_text().splitlines()][1]
    assert "PostgreSQL 16, please." in second["prompt"] and "Which database" in second["prompt"]
    assert second["subjects"][0].startswith("runner: ")  # the blocked attempt's leftovers …
    assert "work started" in second["subjects"]  # … and its commit: the same branch
    events = [e["event"] for e in queue.events(job["id"])]
    assert events.count("answered") == 1 and events[-1] == "succeeded"


def test_an_earlier_blocked_md_does_not_block_the_next_attempt(runner_env, queue, git_repo, tmp_path):
    """The blocked attempt's BLOCKED.md was committed (by the agent, or with its leftovers):
    it is taken out of the tree before the next attempt, so only a new question blocks."""
    marker, log = tmp_path / "answered", tmp_path / "log.jsonl"
    job = _blocked(queue, git_repo, runner_env, marker, log)
    queue.answer(job["id"], "Go on.")
    marker.write_text("x")
    run_one_job(runner_env)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    commits = row["result"]["commits"]
    mirror = repo_cache.mirror_dir(tmp_path / "cache", git_repo)
    git = ["git", "-C", str(mirror)]
    touched = subprocess.run([*git, "log", "--format=%s", commits["head"], "--", "BLOCKED.md"],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    assert len([s for s in touched if s]) == 2  # committed with the leftovers, then removed
    assert subprocess.run([*git, "cat-file", "-e", f"{commits['head']}:BLOCKED.md"]).returncode != 0


def test_only_a_blocked_job_is_answered(queue, db_url):
    job = queue.enqueue(prompt="p", config={"agent": "stub"})
    with psycopg.connect(db_url, autocommit=True) as conn:  # what the web app runs
        assert conn.execute("SELECT * FROM runner_answer(%s, 'yes')", (job["id"],)).fetchall() == []
        conn.execute("UPDATE jobs SET status = 'blocked', attempts = 1 WHERE id = %s", (job["id"],))
        assert conn.execute("SELECT * FROM runner_answer(%s, '  ')", (job["id"],)).fetchall() == []
        [(jid, status, attempts)] = conn.execute(
            "SELECT * FROM runner_answer(%s, 'yes', 'web app user 7')", (job["id"],)).fetchall()
    assert (jid, status, attempts) == (job["id"], "queued", 0)
    assert [e["detail"]["by"] for e in queue.events(job["id"]) if e["event"] == "answered"] == ["web app user 7"]
    with psycopg.connect(db_url, autocommit=True) as conn:  # blocked again, then sent round anew
        conn.execute("UPDATE jobs SET status = 'blocked' WHERE id = %s", (job["id"],))
    assert queue.retry(job["id"])  # attempts start at 0 again: the old answer is not theirs
    assert queue.get(job["id"])["answer"] is None


def test_cli_answer_and_the_blocked_listing(runner_env, queue, git_repo, tmp_path, capsys, monkeypatch):
    job = _blocked(queue, git_repo, runner_env, tmp_path / "never", tmp_path / "log.jsonl")
    for k, v in runner_env.items():
        monkeypatch.setenv(k, v)
    assert cli(["jobs", "--status", "blocked"]) == 0
    out = capsys.readouterr().out
    assert str(job["id"]) in out and "Which database should the migration" in out and "[2 options]" in out
    assert "expired" not in out.split("\n", 1)[1]
    monkeypatch.setenv("RUNNER_BLOCKED_EXPIRE_HOURS", "0")
    assert cli(["jobs", "--status", "blocked"]) == 0
    assert "expired" in capsys.readouterr().out.split("\n", 1)[1]  # listed, still blocked
    assert cli(["answer", str(job["id"])[:8], ""]) == 1
    assert "the answer is empty" in capsys.readouterr().err
    assert cli(["answer", str(job["id"])[:8], "PostgreSQL"]) == 0  # expired: still answered
    assert "queued again" in capsys.readouterr().out
    assert cli(["answer", str(job["id"]), "PostgreSQL"]) == 1
    assert "is queued, not blocked" in capsys.readouterr().err
    assert queue.get(job["id"])["answer"]["by"] == "operator"
