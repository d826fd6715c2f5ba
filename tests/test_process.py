"""runner/process.py: the agent runs in a session of its own; every line reaches the log and
the reader in order; a stop request ends the whole attempt — the agent and whatever it
started in other sessions — and odd output costs no unbounded memory. Real processes."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from runner.agent_output import MAX_LINE_BYTES
from runner.agents.base import AgentCommand, StreamReader
from runner.errors import AgentNotFound
from runner.outcome import EarlyStop, Outcome, StopReason, Verdict
from runner.process import STDERR_FILE, STDOUT_FILE, run_agent
from tests.agents.proc import alive, pid_in


class Collect(StreamReader):
    def __init__(self, stop_on: str | None = None) -> None:
        self.lines: list[tuple[str, str]] = []
        self.stop_on = stop_on

    def feed(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))
        if self.stop_on and line == self.stop_on:
            raise EarlyStop(Outcome(Verdict.FAILED, reason="the stream said so"))


def _command(tmp_path: Path, script: str, job_id: str | None = None) -> AgentCommand:
    work = tmp_path / "job" / "work"
    work.mkdir(parents=True, exist_ok=True)
    # An id of its own: the end of every run SIGKILLs whatever carries its job's marker,
    # and another test may run at the same moment in the other xdist worker.
    job_id = job_id or f"job-proc-test-{uuid.uuid4().hex[:8]}"
    env = {"PATH": os.environ["PATH"], "RUNNER_JOB_ID": job_id}
    return AgentCommand(argv=[sys.executable, "-c", script], env=env, cwd=work)


def _run(cmd: AgentCommand, reader: StreamReader, should_stop=lambda: None, grace=2.0):
    emitted: list[tuple[str, str]] = []
    result = run_agent(cmd, reader=reader, emit=lambda s, ln: emitted.append((s, ln)),
                       should_stop=should_stop, grace_seconds=grace)
    return result, emitted


def test_every_line_in_order_per_stream_and_the_exit_code(tmp_path):
    script = ("import sys\n"
              "for i in range(2000): print(f'out {i}', flush=i % 100 == 0)\n"
              "print('to stderr', file=sys.stderr)\n"
              "sys.exit(7)\n")
    reader = Collect()
    result, emitted = _run(_command(tmp_path, script), reader)
    assert result.exit_code == 7 and result.stop_reason is None
    out = [ln for s, ln in emitted if s == "stdout"]
    assert out == [f"out {i}" for i in range(2000)]
    assert reader.lines == emitted  # the reader saw exactly what the log got
    assert result.stderr_tail == ["to stderr"]
    # The files in the job directory hold the raw stream (kept for the record).
    job_dir = tmp_path / "job"
    assert (job_dir / STDOUT_FILE).read_text().count("\n") == 2000
    assert (job_dir / STDERR_FILE).read_text() == "to stderr\n"


def test_a_stop_request_ends_the_agent_and_what_it_started_in_another_session(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    # The agent starts a child in a session of its own (as Claude Code's Bash tool does),
    # which ignores SIGTERM; then both keep running.
    script = ("import os, subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'], "
              "start_new_session=True)\n"
              f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
              "print('started', flush=True)\n"
              "time.sleep(300)\n")
    asked = {"at": None}

    def should_stop():
        if pidfile.exists() and pidfile.read_text():
            asked["at"] = asked["at"] or time.monotonic()
            return StopReason.CANCELLED
        return None

    result, emitted = _run(_command(tmp_path, script), Collect(), should_stop)
    grandchild = pid_in(pidfile)
    assert result.stop_reason == StopReason.CANCELLED
    assert ("stdout", "started") in emitted
    assert not alive(grandchild), "a process the agent started outlived the attempt"


def test_a_readers_early_stop_ends_the_run_with_its_outcome(tmp_path):
    script = "import time\nprint('fatal: decided', flush=True)\ntime.sleep(300)\n"
    result, _ = _run(_command(tmp_path, script), Collect(stop_on="fatal: decided"))
    assert result.stop_reason == StopReason.EARLY
    assert result.early is not None and result.early.reason == "the stream said so"


def test_nul_bytes_and_an_endless_line_are_survived(tmp_path):
    # 64 MiB on one line, then a NUL-bearing line: the run ends normally, every later line arrives.
    script = ("import sys\n"
              "w = sys.stdout.buffer.write\n"
              "for _ in range(64): w(b'x' * (1 << 20))\n"
              "w(b'\\n')\n"
              "w(b'a\\x00b\\n')\n"
              "w(b'last\\n')\n")
    reader = Collect()
    result, emitted = _run(_command(tmp_path, script), reader)
    assert result.exit_code == 0
    lines = [ln for s, ln in emitted if s == "stdout"]
    assert lines[-2:] == ["ab", "last"]  # NUL dropped, nothing after it lost
    long = lines[0]
    assert long.startswith("x" * 1000) and long.endswith("x" * 1000)
    assert len(long) <= MAX_LINE_BYTES + 200  # its head and tail, with a note of the cut


def test_a_missing_program_is_a_sentence(tmp_path):
    cmd = _command(tmp_path, "")
    cmd.argv = ["/nonexistent/agent-cli", "-p"]
    with pytest.raises(AgentNotFound, match="the agent's program '/nonexistent/agent-cli' was not found"):
        _run(cmd, Collect())
