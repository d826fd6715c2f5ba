"""runner/verdict.py: how one finished run becomes a verdict — in milliseconds, no process.
The early stream verdict wins; a stop by the runner keeps what was spent; a question in
BLOCKED.md turns only a success into blocked; a full disk is named in a failure."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest

from runner import verdict
from runner.agents.base import StreamReader
from runner.outcome import Outcome, StopReason, Verdict
from runner.process import ProcessResult
from runner.workspace import Workspace


class Reader(StreamReader):
    def __init__(self, outcome: Outcome, partial=None) -> None:
        self._outcome, self._partial = outcome, partial

    def outcome(self, run):
        return self._outcome

    def partial_result(self):
        if isinstance(self._partial, Exception):
            raise self._partial
        return self._partial or {}


def _ws(tmp_path: Path) -> Workspace:
    (tmp_path / "work").mkdir(exist_ok=True)
    return Workspace(job_dir=tmp_path, path=tmp_path / "work")


def test_an_early_verdict_of_the_stream_wins_over_everything(tmp_path):
    early = Outcome(Verdict.TOKEN_EXPIRED, reason="401")
    result = ProcessResult(exit_code=143, stop_reason=StopReason.EARLY, early=early)
    assert verdict.of_run(result, Reader(Outcome(Verdict.SUCCEEDED)), 60, _ws(tmp_path)) is early


def test_a_stop_keeps_what_was_spent_and_a_broken_reader_costs_nothing(tmp_path):
    spent = {"usage": {"input_tokens": 10}, "session_id": "s-1"}
    stopped = verdict.of_run(ProcessResult(exit_code=143, stop_reason=StopReason.TIMEOUT),
                             Reader(Outcome(Verdict.SUCCEEDED), spent), 30, _ws(tmp_path))
    assert stopped.verdict is Verdict.RETRY and "30" in stopped.reason
    assert stopped.result == spent
    broken = verdict.of_run(ProcessResult(exit_code=143, stop_reason=StopReason.CANCELLED),
                            Reader(Outcome(Verdict.SUCCEEDED), RuntimeError("bad")), 30, None)
    assert broken.verdict is Verdict.CANCELLED and broken.result == {}


def test_blocked_md_turns_a_success_into_a_question_only_a_success(tmp_path):
    ws = _ws(tmp_path)
    (ws.path / "BLOCKED.md").write_text("Which database should I use?\n- [ ] PostgreSQL\n- [ ] SQLite\n")
    asked = verdict.of_run(ProcessResult(exit_code=0), Reader(Outcome(Verdict.SUCCEEDED)), 60, ws)
    assert asked.verdict is Verdict.BLOCKED
    assert asked.reason == "Which database should I use?"
    assert asked.result["question"] == "Which database should I use?"
    assert [o for o in asked.result["options"]] == ["PostgreSQL", "SQLite"]
    failed = verdict.of_run(ProcessResult(exit_code=1),
                            Reader(Outcome(Verdict.FAILED, reason="boom")), 60, ws)
    assert failed.verdict is Verdict.FAILED and failed.reason == "boom"


def test_a_symlinked_blocked_md_is_not_read(tmp_path):
    ws = _ws(tmp_path)
    secret = tmp_path / "outside.txt"
    secret.write_text("the runner's secret")
    (ws.path / "BLOCKED.md").symlink_to(secret)
    run = verdict.of_run(ProcessResult(exit_code=0), Reader(Outcome(Verdict.SUCCEEDED)), 60, ws)
    assert "the runner's secret" not in str(run.reason) + str(run.result)


def test_a_full_disk_is_named_in_a_failure(tmp_path, monkeypatch):
    Stat = namedtuple("Stat", "f_bavail f_frsize")
    monkeypatch.setattr(os, "statvfs", lambda path: Stat(10, 4096))  # 40 KiB free
    run = verdict.of_run(ProcessResult(exit_code=1),
                         Reader(Outcome(Verdict.FAILED, reason="write failed")), 60, _ws(tmp_path))
    assert run.reason == "write failed (the disk holding the job directory is full: 40960 bytes free)"
    monkeypatch.setattr(os, "statvfs", lambda path: Stat(10**9, 4096))
    roomy = verdict.of_run(ProcessResult(exit_code=1),
                           Reader(Outcome(Verdict.FAILED, reason="write failed")), 60, _ws(tmp_path))
    assert roomy.reason == "write failed"
