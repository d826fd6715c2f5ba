"""runner/gates.py: after the agent succeeded, verify decides, then the push. A failed
check fails the job with its own output and nothing is pushed; a stop during verify is
recorded like a stop during the agent ("… during verify"); the check's processes do not
outlive it. Real processes in a real directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gitkit import settings as git_settings

from runner import gates, push
from runner.outcome import Outcome, StopReason, Verdict
from runner.verify import Plan
from runner.workspace import Workspace
from tests.agents.proc import alive, pid_in


def _ws(tmp_path: Path) -> Workspace:
    work = tmp_path / "job" / "work"
    work.mkdir(parents=True)
    return Workspace(job_dir=work.parent, path=work)


def _gate(tmp_path, commands, *, do_push=False, should_stop=lambda: None, monkeypatch=None):
    lines: list[str] = []
    env = {"PATH": os.environ["PATH"], "RUNNER_JOB_ID": "gates-test"}
    outcome = gates.after_success(
        Outcome(Verdict.SUCCEEDED, result={"summary": "done"}), _ws(tmp_path),
        git_settings(tmp_path), Plan(commands=commands, timeout=60), do_push, env,
        lines.append, should_stop)
    return outcome, lines


def test_a_failing_check_fails_the_job_with_its_output_and_nothing_is_pushed(tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr(push, "push", lambda ws, s: pushed.append(ws) or {"sha": "x"})
    ok = [sys.executable, "-c", "print('all good')"]
    bad = [sys.executable, "-c", "import sys; print('3 tests failed'); sys.exit(1)"]
    outcome, lines = _gate(tmp_path, [ok, bad], do_push=True)
    assert outcome.verdict is Verdict.FAILED
    assert "3 tests failed" in outcome.reason
    assert [r["exit_code"] for r in outcome.result["verify"]] == [0, 1]
    assert outcome.result["summary"] == "done"  # what the agent said is kept
    assert "[verify] 3 tests failed" in lines
    assert pushed == []


def test_passing_checks_then_the_push(tmp_path, monkeypatch):
    monkeypatch.setattr(push, "push", lambda ws, s: {"ref": "refs/heads/b", "sha": "abc"})
    outcome, _ = _gate(tmp_path, [[sys.executable, "-c", "pass"]], do_push=True)
    assert outcome.verdict is Verdict.SUCCEEDED
    assert outcome.result["pushed"] == {"ref": "refs/heads/b", "sha": "abc"}


def test_a_push_refused_by_the_remote_fails_the_job_with_the_reason(tmp_path, monkeypatch):
    def refused(ws, s):
        raise push.PushFailed("pushing branch 'b' failed: protected branch")
    monkeypatch.setattr(push, "push", refused)
    outcome, _ = _gate(tmp_path, [], do_push=True)
    assert outcome.verdict is Verdict.FAILED and "protected branch" in outcome.reason


def test_a_cancel_during_verify_is_a_cancel_and_the_check_is_gone(tmp_path):
    pidfile = tmp_path / "check.pid"
    slow = [sys.executable, "-c",
            f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"]

    def should_stop():
        return StopReason.CANCELLED if pidfile.exists() and pidfile.read_text() else None

    outcome, _ = _gate(tmp_path, [slow], should_stop=should_stop)
    assert outcome.verdict is Verdict.CANCELLED
    assert "during verify" in outcome.reason
    assert not alive(pid_in(pidfile))
