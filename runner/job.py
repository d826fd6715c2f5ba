"""Running one claimed job: validate → workspace → payload → agent → outcome → record.

Every way out of here leaves the job in a recorded state, or handed back to the queue:
bad input ends ``failed`` with a sentence; a runner-side failure hands the claim back.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import structlog

from runner import gates, jobconfig, logs, push, state, verify, worktree
from runner.agents import credcheck, select_agent
from runner.agents.base import RunContext
from runner.errors import DatabaseUnavailable, DatabaseWriteFailed, IterationError, JobInputError
from runner.heartbeat import Heartbeat
from runner.outcome import Outcome, Verdict
from runner.process import ProcessResult, run_agent
from runner.prompts import build_prompt
from runner.queue import Claim, Queue, TooDeep
from runner.settings import Settings

log = structlog.get_logger("runner.job")

EXIT_OK, EXIT_FAILED, EXIT_TOKEN_EXPIRED, EXIT_USAGE_LIMIT, EXIT_STOPPED = 0, 1, 3, 4, 143
_PAYLOAD_OMIT = {"claim_token"}
# Runner-side faults on one job (each refunded) before it ends failed instead of looping.
RUNNER_FAULT_LIMIT = 3


class JobRun:
    def __init__(self, settings: Settings, queue: Queue, claim: Claim, sink: logs.Sink,
                 run_log: Path, stop: threading.Event) -> None:
        self.settings, self.queue, self.claim = settings, queue, claim
        self.job = claim.job
        self.sink, self.run_log, self.stop = sink, run_log, stop
        self.workspace: worktree.Workspace | None = None
        self.reader: Any = None  # the agent's stream reader, once the agent starts

    def run(self) -> int:
        job_id = str(self.claim.id)
        logs.bind(job_id=job_id)
        logs.link_job_log(self.settings, job_id, self.run_log)
        state.set_current_job(self.settings.state_dir, job_id)
        log.info("job_claimed", attempt=self.job["attempts"], max_attempts=self.job["max_attempts"],
                 queue=self.job["queue"], kind=self.job["kind"], repo_url=self.job["repo_url"])
        try:
            try:
                outcome = self.execute()
            except JobInputError as exc:
                outcome = Outcome(Verdict.FAILED, reason=str(exc))
            except IterationError as exc:
                log.error("iteration_failed_with_job", error=str(exc))
                self._hand_back(str(exc), refund=True)
                return EXIT_FAILED
            except Exception as exc:
                log.exception("job_crashed_runner")
                # A runner-side fault: the attempt is refunded, and exit 1 backs the worker off.
                self._hand_back_safely(f"the runner failed while running the job: {exc}")
                return EXIT_FAILED
            return self._record(outcome)
        finally:
            self._cleanup()
            state.clear_current_job(self.settings.state_dir)
            if self.sink.fault:
                state.set_last_error(self.settings.state_dir, self.sink.fault)

    # -- the steps -------------------------------------------------------------------

    def execute(self) -> Outcome:
        for column in ("config", "payload"):
            if isinstance(self.job.get(column), TooDeep):
                raise JobInputError(f"the job's {column} is JSON nested too deeply for the runner "
                                    f"to read (at most about 900 levels)")
        # The config is parsed once, here, before any side effect; everything after reads
        # the typed result (runner/jobconfig.py).
        config = jobconfig.parse(self.job["config"], self.settings.default_agent)
        prompt = build_prompt(self.job, self.settings)
        agent = select_agent(config, self.settings)
        timeout = config.timeout_s or self.settings.job_timeout_seconds
        checks = verify.plan(config, self.settings)
        do_push = push.wanted(config, has_repo=bool(self.job.get("repo_url")))
        self.workspace = worktree.prepare(self.job, self.settings)
        payload_path = self._write_payload()
        ctx = RunContext(job=self.job, config=config, settings=self.settings,
                         workdir=self.workspace.path, job_dir=self.workspace.job_dir,
                         payload_path=payload_path, prompt=prompt)
        command = agent.command(ctx)
        self.agent_name, self.agent_env = agent.name, command.env  # for credcheck.confirm
        if self.stop.is_set():  # stopped while the worktree was being prepared
            return Outcome(Verdict.SHUTDOWN, reason="the runner was stopped before the agent started")
        if not self.queue.mark_running(self.claim, str(self.workspace.path), agent=agent.name,
                                       pid=os.getpid()):
            return Outcome(Verdict.LEASE_LOST, reason="the claim was lost before the agent started")
        log.info("agent_starting", agent=agent.name, cwd=str(command.cwd), timeout_s=timeout)
        reader = self.reader = agent.reader()
        deadline = time.monotonic() + timeout
        with Heartbeat(self.settings.dsn, self.settings.worker_id, self.claim,
                       self.settings.lease_seconds) as heartbeat:

            def should_stop() -> str | None:
                if self.stop.is_set():
                    return "shutdown"
                return heartbeat.stop_reason() or (
                    "timeout" if time.monotonic() >= deadline else None)

            state_dir = self.settings.state_dir
            try:
                result = run_agent(
                    command, reader=reader, emit=self.sink.agent_line, should_stop=should_stop,
                    grace_seconds=self.settings.kill_grace_seconds,
                    output_dir=self.workspace.job_dir, agent=self.settings.agent,
                    on_spawn=lambda pgid: state.set_agent(
                        state_dir, self.settings.worker_id, str(self.claim.id), pgid))
            finally:
                state.clear_agent(state_dir, self.settings.worker_id)
            log.info("agent_exited", exit_code=result.exit_code, stopped=result.stop_reason,
                     seconds=round(result.seconds, 2))
            outcome = self._outcome(result, reader, timeout)
            if outcome.verdict is Verdict.SUCCEEDED:
                # Verify, then push, still under the lease (and its cancel/stop checks).
                outcome = gates.after_success(
                    outcome, self.workspace, self.settings, checks, do_push, command.env,
                    self.sink.write_line,
                    lambda: "shutdown" if self.stop.is_set() else heartbeat.stop_reason())
        if outcome.verdict in (Verdict.SUCCEEDED, Verdict.BLOCKED, Verdict.FAILED, Verdict.RETRY):
            outcome.result.setdefault("commits", worktree.commits(self.workspace, self.settings))
        return outcome

    def _outcome(self, result: ProcessResult, reader, timeout: int) -> Outcome:
        stopped = {
            "shutdown": Outcome(Verdict.SHUTDOWN, reason="the runner was stopped (SIGTERM/SIGINT)"),
            "lease_lost": Outcome(Verdict.LEASE_LOST, reason="the claim was lost"),
            "cancelled": Outcome(Verdict.CANCELLED, reason="cancelled by an operator"),
            "timeout": Outcome(Verdict.RETRY, reason=f"timed out after {timeout} s"),
        }
        if result.early is not None:
            return result.early
        if result.stop_reason in stopped:
            # What was spent before the stop is recorded too (usage added up from the stream).
            stopped[result.stop_reason].result.update(_partial(reader))
            return stopped[result.stop_reason]
        outcome = reader.outcome(result.output())
        if outcome.verdict is not Verdict.SUCCEEDED and self.workspace is not None:
            # The agent's own output lives on the same disk: when that disk is full, its
            # "No space left on device" may never have been written, so say it here.
            full = _disk_full_note(self.workspace.job_dir)
            if full and outcome.reason and full not in outcome.reason:
                outcome.reason = f"{outcome.reason} ({full})"
        if outcome.verdict is Verdict.SUCCEEDED and self.workspace is not None:
            question = _blocked_question(self.workspace.path)
            if question is not None:
                outcome.verdict = Verdict.BLOCKED
                outcome.reason = question
                outcome.result["question"] = question
        return outcome

    def _write_payload(self) -> Path:
        assert self.workspace is not None
        path = self.workspace.job_dir / "payload.json"
        body = {k: v for k, v in self.job.items() if k not in _PAYLOAD_OMIT}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh, default=str, indent=2)
        return path

    # -- recording ---------------------------------------------------------------------

    def _record(self, outcome: Outcome) -> int:
        if outcome.verdict in (Verdict.TOKEN_EXPIRED, Verdict.USAGE_LIMIT):
            outcome = credcheck.confirm(outcome, getattr(self, "agent_name", ""),
                                        getattr(self, "agent_env", {}),
                                        self.settings.max_usage_wait_seconds)
        v = outcome.verdict
        log.info("job_outcome", verdict=v.value, reason=outcome.reason)
        try:
            if v in (Verdict.SUCCEEDED, Verdict.BLOCKED, Verdict.FAILED, Verdict.CANCELLED):
                self._finish(v.value, outcome)
                return EXIT_OK
            if v is Verdict.RETRY:
                return self._retry_or_fail(outcome)
            if v is Verdict.LEASE_LOST:
                log.warning("claim_lost_nothing_written")
                return EXIT_OK
            if v is Verdict.TOKEN_EXPIRED:
                self._hand_back(outcome.reason or "credentials rejected", refund=True,
                                result=outcome.result)
                return EXIT_TOKEN_EXPIRED
            if v is Verdict.USAGE_LIMIT:
                reset = outcome.reset_at or datetime.now(timezone.utc) + timedelta(hours=1)
                self._hand_back(outcome.reason or "usage limit reached", refund=True, run_after=reset,
                                result=outcome.result)
                state.set_usage_limit_reset(self.settings.state_dir, reset)
                return EXIT_USAGE_LIMIT
            self._hand_back(outcome.reason or "stopped", refund=True, result=outcome.result)
            return EXIT_STOPPED
        except DatabaseWriteFailed as exc:
            log.error("outcome_not_recorded", error=str(exc))
            self._hand_back_safely(f"the runner could not record the outcome: {exc}")
            return EXIT_FAILED
        except DatabaseUnavailable as exc:
            # The lease will expire and another iteration will requeue the job.
            log.error("outcome_not_recorded", error=str(exc))
            return EXIT_FAILED

    def _hand_back_safely(self, reason: str) -> None:
        """Give the claim back with the attempt refunded; keep only the usage spent so far.

        A runner-side fault is not the job's, so it costs no attempt — but a job that makes
        the runner fail every time would then loop for ever: after RUNNER_FAULT_LIMIT such
        hand-backs it ends ``failed`` with the reason, and until then each one waits a
        little longer, so that other jobs go first.
        """
        state.set_last_error(self.settings.state_dir, reason)
        try:
            faults = self.queue.runner_faults(self.claim.id)
            if faults + 1 >= RUNNER_FAULT_LIMIT:
                self._finish("failed", Outcome(Verdict.FAILED, result=_partial(self.reader), reason=(
                    f"{reason} — the runner failed on this job {faults + 1} times, so it is not "
                    f"tried again (a bug in the runner or something in this job's input; the job's "
                    f"log has the details)")))
                return
            s = self.settings
            delay = min(s.retry_backoff_seconds * 2 ** faults, s.retry_backoff_max_seconds)
            run_after = datetime.now(timezone.utc) + timedelta(seconds=delay)
            if not self.queue.requeue(self.claim, event="rolled_back", reason=reason,
                                      refund_attempt=True, result=_partial(self.reader) or None,
                                      run_after=run_after, runner_fault=True):
                log.warning("claim_lost_before_rollback")
        except Exception as exc:  # the lease runs out and the sweep hands the job back
            log.error("rollback_failed", error=str(exc))

    def _finish(self, status: str, outcome: Outcome) -> None:
        if not self.queue.finish(self.claim, status, result=outcome.result, error=outcome.error):
            log.warning("claim_lost_before_finish", status=status)

    def _retry_or_fail(self, outcome: Outcome) -> int:
        attempts, max_attempts = self.job["attempts"], self.job["max_attempts"]
        if attempts >= max_attempts:
            reason = f"{outcome.reason} (attempt {attempts} of {max_attempts}; no attempts left)"
            self._finish("failed", Outcome(Verdict.FAILED, reason=reason, result=outcome.result))
            return EXIT_OK
        s = self.settings
        delay = min(s.retry_backoff_seconds * 2 ** (attempts - 1), s.retry_backoff_max_seconds)
        run_after = datetime.now(timezone.utc) + timedelta(seconds=delay)
        self.queue.requeue(self.claim, event="retry_scheduled", reason=outcome.reason or "",
                           refund_attempt=False, run_after=run_after, result=outcome.result,
                           backoff_seconds=delay)
        log.info("retry_scheduled", attempt=attempts, max_attempts=max_attempts,
                 backoff_seconds=delay)
        return EXIT_OK

    def _hand_back(self, reason: str, *, refund: bool, run_after: datetime | None = None,
                   result: dict[str, Any] | None = None) -> None:
        if not self.queue.requeue(self.claim, event="rolled_back", reason=reason,
                                  refund_attempt=refund, run_after=run_after,
                                  result=result or None):
            log.warning("claim_lost_before_rollback")
        else:
            log.info("claim_rolled_back", reason=reason, attempt_refunded=refund)

    def _cleanup(self) -> None:
        ws = self.workspace
        if ws is None:
            return
        for private in ("payload.json", "mcp.json"):  # mcp.json: an agent's MCP servers
            (ws.job_dir / private).unlink(missing_ok=True)
        row = None
        try:
            row = self.queue.get(self.claim.id)
        except DatabaseUnavailable:
            pass
        # Failed, blocked and cancelled work stays for a person to inspect.
        keep = row is not None and row["status"] in ("failed", "blocked", "cancelled") \
            and row.get("claimed_by") == self.settings.worker_id
        if not keep:
            worktree.remove(ws, self.settings)


def _partial(reader: Any) -> dict[str, Any]:
    try:
        return reader.partial_result() if reader is not None else {}
    except Exception:  # a reader's summary must never cost the recording
        return {}


def _blocked_question(workdir: Path) -> str | None:
    path = workdir / "BLOCKED.md"
    if path.is_file() and not path.is_symlink():
        text = path.read_text(errors="replace").strip()
        return text[:10000] or "the agent wrote an empty BLOCKED.md"
    return None


FULL_DISK_BYTES = 1 << 20  # below this much free space a disk counts as full


def _disk_full_note(job_dir: Path) -> str | None:
    """A sentence when the disk holding the job directory is (nearly) full, else None."""
    try:
        st = os.statvfs(job_dir)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= FULL_DISK_BYTES:
        return None
    return f"the disk holding the job directory is full: {free} bytes free"
