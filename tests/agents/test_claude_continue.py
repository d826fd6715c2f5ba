"""A job goes on from an earlier session, with the real Claude Code CLI against the loopback
Messages API (tests/fakes/anthropic_api.py): a question answered with ``runner answer``, and
a pipeline implement → review → fix with config.continue_from. The first request of the
attempt that goes on carries the earlier session's turns and the new message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.agents.test_claude_cli import BIN, CONFIG, claude_env, pytestmark  # noqa: F401
from tests.conftest import REPO, make_git_repo, run_one_job
from tests.fakes.anthropic_api import FakeAnthropic, last_user_content, text, tool_results, tool_use

QUESTION = "Which database should the migration target?\n\n- [ ] PostgreSQL 16\n- [ ] SQLite\n"


def _said(body) -> str:
    return json.dumps(last_user_content(body))


def _earlier_turns(request) -> str:
    return json.dumps(request.body["messages"][:-1])


def test_an_answered_question_resumes_the_session_with_the_answer(claude_env, queue, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    job = queue.enqueue(prompt="Migrate the schema.", repo_url=url, max_attempts=1, config=CONFIG)
    work = Path(claude_env["RUNNER_JOB_ROOT"]) / str(job["id"]) / "work"

    def responder(body):
        if "PostgreSQL 16, because production runs it." in _said(body):
            return tool_use("Write", {"file_path": str(work / "migration.sql"), "content": "-- pg\n"})
        if tool_results(body):
            return text("Done." if (work / "migration.sql").exists() else "I asked in BLOCKED.md.")
        return tool_use("Write", {"file_path": str(work / "BLOCKED.md"), "content": QUESTION})

    with FakeAnthropic(responder) as api:
        proc = run_one_job(claude_env, timeout=120, ANTHROPIC_BASE_URL=api.base_url)
        assert proc.returncode == 0, proc.stdout[-3000:]
        row = queue.get(job["id"])
        assert row["status"] == "blocked", row["error"]
        assert row["result"]["question"] == "Which database should the migration target?"
        assert row["result"]["options"] == ["PostgreSQL 16", "SQLite"]
        session = row["result"]["session_id"]
        answered = subprocess.run(
            [sys.executable, "-m", "runner", "answer", str(job["id"]),
             "PostgreSQL 16, because production runs it."],
            env=claude_env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert answered.returncode == 0, answered.stderr
        before = len(api.message_requests)
        proc = run_one_job(claude_env, timeout=120, ANTHROPIC_BASE_URL=api.base_url)
        requests = api.message_requests[before:]
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]  # one attempt: the question cost none
    assert row["result"]["summary"] == "Done." and row["result"]["session_id"] == session
    first = requests[0]  # the next attempt's first request: the answer, after the earlier turns
    assert "PostgreSQL 16, because production runs it." in _said(first.body)
    assert "Which database should the migration target?" in _said(first.body)
    assert "Migrate the schema." in _earlier_turns(first)
    assert '"tool_use"' in _earlier_turns(first) and "BLOCKED.md" in _earlier_turns(first)


def test_implement_review_fix_each_resumes_the_previous_steps_session(claude_env, queue, db_url, tmp_path):
    import psycopg

    from runner import client

    url = make_git_repo(tmp_path / "origin")
    root = Path(claude_env["RUNNER_JOB_ROOT"])
    with psycopg.connect(db_url) as conn:
        implement = client.enqueue(conn, prompt="Implement greet.", repo_url=url, config=CONFIG)
        review = client.enqueue(conn, prompt="Review greet.", config={
            **CONFIG, "continue_from": str(implement.id)})
        fix = client.enqueue(conn, prompt="Fix greet.", config={
            **CONFIG, "continue_from": str(review.id)})
    steps = {"Implement greet.": (implement.id, "greet.txt", "hello\n"),
             "Review greet.": (review.id, "REVIEW.md", "say hello, world\n"),
             # a new file: the CLI's Write refuses a file this session has not read
             "Fix greet.": (fix.id, "greet-world.txt", "hello, world\n")}

    def responder(body):
        if tool_results(body):
            return text("Step done.")
        # newest step first: a resumed session's last user message may quote an earlier one
        for asked, (job_id, name, content) in reversed(steps.items()):
            if asked in _said(body):
                return tool_use("Write", {"file_path": str(root / str(job_id) / "work" / name),
                                          "content": content})
        return text("?")

    firsts = []
    with FakeAnthropic(responder) as api:
        for _ in steps:
            before = len(api.message_requests)
            proc = run_one_job(claude_env, timeout=120, ANTHROPIC_BASE_URL=api.base_url)
            assert proc.returncode == 0, proc.stdout[-3000:]
            firsts.append(api.message_requests[before])
    rows = [queue.get(j) for j in (implement.id, review.id, fix.id)]
    assert [r["status"] for r in rows] == ["succeeded"] * 3, [r["error"] for r in rows]
    commits = [r["result"]["commits"] for r in rows]
    for earlier, later in zip(commits, commits[1:]):  # each from the previous step's head
        assert later["base"] == earlier["head"] and later["count"] == 1
        assert later["branch"] == commits[0]["branch"]
    # the review's first request: the implement session's turns, then the next task
    assert "Review greet." in _said(firsts[1].body)
    assert "Implement greet." in _earlier_turns(firsts[1]) and "greet.txt" in _earlier_turns(firsts[1])
    # the fix's: the review's session, which holds the implement session's too
    assert "Review greet." in _earlier_turns(firsts[2]) and "Implement greet." in _earlier_turns(firsts[2])
    sessions = {r["result"]["session_id"] for r in rows}
    assert len(sessions) == 1  # one conversation across the three jobs
    assert not (root / str(implement.id)).exists() or not (root / str(implement.id) / "work").exists()
