"""Issue 13, item 2: progress while the agent runs — what a snapshot holds, read from the
agents' captured streams, and that a slow database never costs the run."""

from __future__ import annotations

import json
import threading

import psycopg

from runner.budget import Spend
from runner.progress import Tracker, short, tool_argument
from tests.agents.conftest import capture
from tests.agents.proc import wait_for
from tests.conftest import fake, run_one_job
from tests.test_budget import _assistant, fake_claude  # noqa: F401 - the fixture


def _changes(agent: str, lines: list[str], spend=None) -> tuple[Tracker, list[str]]:
    tracker = Tracker(agent, spend)
    return tracker, [c for c in (tracker.feed("stdout", line) for line in lines) if c]


def test_a_claude_tool_call_and_its_turns():
    lines, _ = capture("claude", "success_write_tool")
    tracker, changes = _changes("claude", lines, lambda: Spend(17242, None))
    assert changes == ["tool_start", "tool_end", "turn", "result"]
    snap = tracker.snapshot("tick")
    assert snap["turns"] == 2 and snap["tool_calls"] == 1
    assert snap["tool"] == {"name": "Write", "arg": "/tmp/capture/repo/hello.txt", "state": "done"}
    assert snap["last_text"] == "Wrote hello.txt." and snap["tokens"] == 17242


def test_a_codex_command_and_a_file_change():
    lines, _ = capture("codex", "success_documented")
    tracker, changes = _changes("codex", lines)
    assert changes == ["turn", "tool_start", "tool_end", "tool_end", "text"]
    snap = tracker.snapshot("tick")
    assert snap["tool_calls"] == 2 and snap["tool"]["name"] == "file_change"
    assert snap["tool"]["arg"] == "hello.txt" and snap["last_text"] == "Created hello.txt."


def test_gemini_text_and_turns():
    lines, _ = capture("gemini", "success_text")
    tracker, changes = _changes("gemini", lines)
    assert changes[0] == "turn" and tracker.last_text == "Hello from the fake Gemini."


def test_arguments_are_short_and_redacted():
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    arg = tool_argument({"command": f"curl -H 'Authorization: token {token}' " + "x" * 300})
    assert token not in arg and len(arg) <= 120 and arg.endswith("…")
    assert tool_argument({"file_path": "/w/a.py", "content": "big"}) == "/w/a.py"
    assert short("line one\nline two", 100) == "line one line two"
    long_path = tool_argument({"file_path": "/deep" * 40 + "/name.py"})
    assert long_path.startswith("…") and long_path.endswith("/deep/name.py") and len(long_path) == 120


def test_a_database_that_hangs_on_progress_does_not_cost_the_run(fake_claude, queue, git_repo,
                                                                  db_url):
    """A row lock held for longer than the heartbeat's statement timeout: the progress writes
    wait, time out and are dropped; the agent's output is not held up and the job succeeds."""
    result = json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "ok"})
    job = queue.enqueue(prompt="work", repo_url=git_repo, config={**fake(
        sleep=2, then_stdout=[_assistant(i) for i in range(3)] + [result], then_sleep=8),
        "agent": "claude"})
    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        wait_for(lambda: queue.job_status(job["id"]) == "running", what="running")
        with psycopg.connect(db_url) as conn:  # one open transaction holding the row
            conn.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job["id"],))
            locked.set()
            release.wait(9)

    holder = threading.Thread(target=hold_the_row, daemon=True)
    holder.start()
    try:
        proc = run_one_job(fake_claude, timeout=90)
    finally:
        release.set()
        holder.join(10)
    assert locked.is_set()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert queue.get(job["id"])["status"] == "succeeded"
    assert '"event": "progress_not_written"' in proc.stdout
