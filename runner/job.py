"""Running one claimed job: validate → workspace → payload → agent → outcome → record.

Every way out of here leaves the job in a recorded state, or handed back to the queue:
bad input ends ``failed`` with a sentence; a runner-side failure hands the claim back.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import structlog

from runner import (budget, clone, continuation, continue_from, gates, guard, jobconfig,
                    leftovers, logs, progress, push, retry, state, structured, verdict,
                    verify, worktree)
from runner.agents import credcheck, select_agent
from runner.agents.base import RunContext
from runner.contract import KEPT_FOR_INSPECTION, Exit
from runner.errors import DatabaseUnavailable, DatabaseWriteFailed, IterationError, JobInputError
from runner.heartbeat import Heartbeat
from runner.outcome import ENDINGS, Action, Outcome, StopReason, Verdict
from runner.process import hand_tree, run_agent
from runner.prompts import build_prompt
from runner.dbconn import TooDeep
from runner.queue import Claim, Queue
from runner.settings import Settings
from runner.staging import take as take_staged
from runner.wakeup import Wakeup
from runner.workspace import KEPT_WORK, PAYLOAD_FILE, Workspace

log = structlog.get_logger("runner.job")

_PAYLOAD_OMIT = {"claim_token"}
# Runner-side faults on one job (each refunded) before it ends failed instead of looping.
RUNNER_FAULT_LIMIT = 3


class JobRun:
    def __init__(self, settings: Settings, queue: Queue, claim: Claim, sink: logs.Sink,
                 run_log: Path, stop: threading.Event) -> None:
        self.settings, self.queue, self.claim = settings, queue, claim
        self.job = claim.job
        self.sink, self.run_log, self.stop = sink, run_log, stop
        self.workspace: Workspace | None = None
        self.reader: Any = None  # the agent's stream reader, once the agent starts
        # Set once another worker holds the job: from then on this iteration writes and
        # removes nothing of it (row, directory, branch, worktree registration).
        self.claim_lost = False
        # Set once the job went back to the queue: the next attempt (maybe another
        # worker's, at once) continues from its directory, so nothing of it is removed.
        self.handed_back = False

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
                self._drop_private()
                self._hand_back(str(exc), refund=True)
                return Exit.FAILED
            except Exception as exc:
                log.exception("job_crashed_runner")
                # A runner-side fault: the attempt is refunded, and exit 1 backs the worker off.
                self._drop_private()
                self._hand_back_safely(f"the runner failed while running the job: {exc}")
                return Exit.FAILED
            if outcome.verdict is not Verdict.LEASE_LOST:
                self._drop_private()
            return self._record(outcome)
        finally:
            self._cleanup()
            state.clear_current_job(self.settings.state_dir)
            if self.sink.fault:
                state.set_last_error(self.settings.state_dir, self.sink.fault)

    # -- the steps -------------------------------------------------------------------

    def execute(self) -> Outcome:
        if self.job.get("cancel_requested"):
            # A web app's own UPDATE of a queued row sets only the flag: never start it.
            return Outcome(Verdict.CANCELLED, reason="cancelled before it started")
        for column in ("config", "payload"):
            if isinstance(self.job.get(column), TooDeep):
                raise JobInputError(f"the job's {column} is JSON nested too deeply for the runner "
                                    f"to read (at most about 900 levels)")
        # The config is parsed once, here, before any side effect; everything after reads
        # the typed result (runner/jobconfig.py).
        config = jobconfig.parse(self.job["config"], self.settings.default_agent)
        earlier = continue_from.earlier_job(self.queue, self.job, (config.continue_from or "").lower())
        prompt = build_prompt(self.job, self.settings)
        agent = select_agent(config, self.settings)
        limits = budget.limits(config, self.settings)
        timeout = config.timeout_s or self.settings.job_timeout_seconds
        checks = verify.plan(config, self.settings)
        do_push = push.wanted(config, has_repo=bool(self.job.get("repo_url")))
        continuing = config.on_retry == "continue"
        # An earlier attempt killed before it could keep its leftovers: they go first.
        rescued = leftovers.rescue_previous(self.job, self.settings,
                                            commit=config.commit_leftovers) if continuing else None
        self.workspace = continue_from.prepare(self.job, earlier, config, self.settings)
        if self.stop.is_set():  # stopped while the worktree was being prepared
            return Outcome(Verdict.SHUTDOWN, reason="the runner was stopped before the agent started")
        # The workspace is ready: "running" is sent now and made durable by the server
        # while the job's last files are written; the agent starts only once it is.
        running = self.queue.mark_running_sent(self.claim, str(self.workspace.path),
                                               agent=agent.name, pid=os.getpid())
        try:
            payload_path = self._write_payload()
            # fresh_prompt: what a refused resume starts afresh with
            prompt, resume, fresh_prompt = continuation.plan(
                self.job, self.workspace, self.settings, agent, prompt, earlier, continuing)
            ctx = RunContext(job=self.job, config=config, settings=self.settings,
                             workdir=self.workspace.path, job_dir=self.workspace.job_dir,
                             payload_path=payload_path, prompt=prompt, resume_session=resume)
            command = agent.command(ctx)
            self._give_to_agent(self.workspace.job_dir / "mcp.json")  # a job's inline MCP config
            self.agent_name, self.agent_env = agent.name, command.env  # for credcheck.confirm
        except BaseException:
            with contextlib.suppress(Exception):  # the connection is the queue's again
                running.changed()
            raise
        if not running.changed():
            return Outcome(Verdict.LEASE_LOST, reason="the claim was lost before the agent started")
        log.info("agent_starting", agent=agent.name, cwd=str(command.cwd), timeout_s=timeout)
        budget.log_limits(limits)
        deadline = time.monotonic() + timeout
        # (the Wakeup outlives the heartbeat's thread, which may wake it until it ends)
        with Wakeup() as waking, Heartbeat(self.settings.dsn, self.settings.worker_id, self.claim,
                                           self.settings.lease_seconds, start_on_enter=False) as heartbeat:
            heartbeat.on_stop = waking.wake  # a cancel or a lost claim: the agent loop acts now

            def should_stop() -> StopReason | None:
                if self.stop.is_set():
                    return StopReason.SHUTDOWN
                return heartbeat.stop_reason() or (
                    StopReason.TIMEOUT if time.monotonic() >= deadline else None)

            def run(command) -> Outcome:  # noqa: ANN001
                # The agent's reader, with progress (written by the heartbeat's thread) and
                # the budget check around it.
                inner = agent.reader()
                tracker = progress.Tracker(agent.name, lambda: budget.spend_of(inner.partial_result()))
                reader = self.reader = budget.BudgetedReader(
                    progress.ProgressReader(inner, tracker, heartbeat.report), limits)
                state_dir = self.settings.state_dir

                def spawned(pgid: int) -> None:
                    heartbeat.start()  # not before the spawn: it would slow it (heartbeat.py)
                    state.set_agent(state_dir, self.settings.worker_id, str(self.claim.id), pgid)

                try:
                    result = run_agent(
                        command, reader=reader, emit=self.sink.agent_line, should_stop=should_stop,
                        grace_seconds=self.settings.kill_grace_seconds,
                        output_dir=self.workspace.job_dir, agent=self.settings.agent,
                        on_spawn=spawned, wakeup=waking)
                finally:
                    state.clear_agent(state_dir, self.settings.worker_id)
                log.info("agent_exited", exit_code=result.exit_code, stopped=result.stop_reason,
                         seconds=round(result.seconds, 2))
                # With config.output_schema, success needs an answer that matches it.
                return structured.check(verdict.of_run(result, reader, timeout, self.workspace),
                                        config.output_schema, reader)

            outcome = run(command)
            if resume is not None and continuation.resume_refused(outcome) and should_stop() is None:
                # The CLI could not load the earlier session (a transcript cut short by a
                # kill): no attempt is spent on that — the same attempt starts afresh.
                log.warning("resume_refused_starting_fresh", session=resume, reason=outcome.reason)
                ctx.prompt = fresh_prompt
                ctx.resume_session = resume = None
                command = agent.command(ctx)
                outcome = run(command)
            if outcome.verdict is not Verdict.LEASE_LOST and heartbeat.stop_reason() != "lease_lost":
                if self.settings.agent.isolated and self.workspace.mirror is None:
                    hand_tree(self.workspace.path, os.geteuid(), os.getegid())  # ours again
                if self.workspace.clone:  # the agent's own clone: its commits come back first
                    back = clone.bring_back(self.workspace, self.settings, self.settings.agent,
                                            str(self.claim.id))
                    if back is not None and back.get("error"):
                        outcome.result["import_error"] = back["error"]
                        # Its commits are only in its clone: the directory stays.
                        (self.workspace.job_dir / KEPT_WORK).write_text(
                            json.dumps({"import_error": back["error"]}))
                # Before verify and push: what the agent left uncommitted is work too.
                kept = leftovers.keep(self.workspace, self.settings, commit=config.commit_leftovers)
                if kept is not None:
                    outcome.result["leftovers"] = kept
            if outcome.verdict is Verdict.SUCCEEDED:
                # Verify, then push, still under the lease (and its cancel/stop checks).
                outcome = gates.after_success(
                    outcome, self.workspace, self.settings, checks, do_push, command.env,
                    self.sink.write_line,
                    lambda: StopReason.SHUTDOWN if self.stop.is_set() else heartbeat.stop_reason())
        if outcome.verdict is not Verdict.LEASE_LOST:
            outcome.result.setdefault("commits", worktree.commits(self.workspace, self.settings))
            if rescued is not None:
                outcome.result["previous_attempt_leftovers"] = rescued
        return outcome

    def _write_payload(self) -> Path:
        assert self.workspace is not None
        path = self.workspace.job_dir / PAYLOAD_FILE
        body = {k: v for k, v in self.job.items() if k not in _PAYLOAD_OMIT}
        # A new file (O_EXCL: never one left in place), or the empty one the worker made
        # ahead (runner/staging.py) renamed to this name just now.
        flags = os.O_WRONLY | os.O_NOFOLLOW | (os.O_TRUNC if take_staged(path) else os.O_CREAT | os.O_EXCL)
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh, default=str, indent=2)
        self._give_to_agent(path)
        return path

    def _give_to_agent(self, path: Path) -> None:
        """The job's own private file (0600), for its agent to read under its own uid."""
        agent = self.settings.agent
        if agent.isolated and path.exists():
            os.chown(path, agent.uid, agent.gid)

    # -- recording ---------------------------------------------------------------------

    def _record(self, outcome: Outcome) -> int:
        if outcome.verdict in (Verdict.TOKEN_EXPIRED, Verdict.USAGE_LIMIT):
            outcome = credcheck.confirm(outcome, getattr(self, "agent_name", ""),
                                        getattr(self, "agent_env", {}),
                                        self.settings.max_usage_wait_seconds)
        outcome = guard.refunded(self.queue, self.settings, self.job, outcome)
        v = outcome.verdict
        ending = ENDINGS[v]  # what each verdict writes, refunds and exits with: one table
        log.info("job_outcome", verdict=v.value, reason=outcome.reason)
        # What the run says about the model API: the fleet's pause (runner/guard.py). The
        # pause keeps its jobs from the claim; they need no run_after of their own.
        guard.after_run(self.queue, self.settings, self.job, getattr(self, "agent_name", None),
                        outcome)
        try:
            if ending.action is Action.FINISH:
                self._finish(v.value, outcome)
            elif ending.action is Action.RETRY:
                self._retry_or_fail(outcome)
            elif ending.action is Action.NOTHING:
                self.claim_lost = True
                log.warning("claim_lost_nothing_written")
            else:
                run_after = guard.hand_back_at(outcome, self.settings)
                if v is Verdict.USAGE_LIMIT:
                    run_after = outcome.reset_at or datetime.now(timezone.utc) + timedelta(hours=1)
                    state.set_usage_limit_reset(self.settings.state_dir, run_after)
                self._hand_back(outcome.reason or v.value.replace("_", " "), refund=ending.refund,
                                run_after=run_after, result=outcome.result,
                                **({"overloaded": True} if v is Verdict.OVERLOADED else {}))
            return ending.exit
        except DatabaseWriteFailed as exc:
            log.error("outcome_not_recorded", error=str(exc))
            self._hand_back_safely(f"the runner could not record the outcome: {exc}")
            return Exit.FAILED
        except DatabaseUnavailable as exc:
            # The lease will expire and another iteration will requeue the job.
            log.error("outcome_not_recorded", error=str(exc))
            return Exit.FAILED

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
                self._finish("failed", Outcome(Verdict.FAILED, result=verdict.partial(self.reader), reason=(
                    f"{reason} — the runner failed on this job {faults + 1} times, so it is not "
                    f"tried again (a bug in the runner or something in this job's input; the job's "
                    f"log has the details)")))
                return
            s = self.settings
            delay = retry.backoff(s.retry_backoff_seconds, s.retry_backoff_max_seconds, faults + 1)
            run_after = datetime.now(timezone.utc) + timedelta(seconds=delay)
            if not self.queue.requeue(self.claim, event="rolled_back", reason=reason,
                                      refund_attempt=True, result=verdict.partial(self.reader) or None,
                                      run_after=run_after, runner_fault=True):
                self.claim_lost = True
                log.warning("claim_lost_before_rollback")
            else:
                self.handed_back = True
        except Exception as exc:  # the lease runs out and the sweep hands the job back
            log.error("rollback_failed", error=str(exc))

    def _finish(self, status: str, outcome: Outcome) -> None:
        if not self.queue.finish(self.claim, status, result=outcome.result, error=outcome.error):
            self.claim_lost = True
            log.warning("claim_lost_before_finish", status=status)

    def _retry_or_fail(self, outcome: Outcome) -> None:
        attempts, max_attempts = self.job["attempts"], self.job["max_attempts"]
        if attempts >= max_attempts:
            reason = f"{outcome.reason} (attempt {attempts} of {max_attempts}; no attempts left)"
            self._finish("failed", Outcome(Verdict.FAILED, reason=reason, result=outcome.result))
            return
        s = self.settings
        delay = retry.backoff(s.retry_backoff_seconds, s.retry_backoff_max_seconds, attempts)
        run_after = datetime.now(timezone.utc) + timedelta(seconds=delay)
        if not self.queue.requeue(self.claim, event="retry_scheduled", reason=outcome.reason or "",
                                  refund_attempt=False, run_after=run_after, result=outcome.result,
                                  backoff_seconds=delay):
            self.claim_lost = True
            log.warning("claim_lost_before_retry")
            return
        self.handed_back = True
        log.info("retry_scheduled", attempt=attempts, max_attempts=max_attempts,
                 backoff_seconds=delay)

    def _hand_back(self, reason: str, *, refund: bool, run_after: datetime | None = None,
                   result: dict[str, Any] | None = None, **detail: Any) -> None:
        if not self.queue.requeue(self.claim, event="rolled_back", reason=reason,
                                  refund_attempt=refund, run_after=run_after,
                                  result=result or None, **detail):
            self.claim_lost = True
            log.warning("claim_lost_before_rollback")
        else:
            self.handed_back = True
            log.info("claim_rolled_back", reason=reason, attempt_refunded=refund)

    def _drop_private(self) -> None:
        """Remove the files only the agent's start needed (the job's payload, its MCP
        servers' config) before the job is recorded or handed back — afterwards the
        directory may already be the next attempt's."""
        ws = self.workspace
        if ws is None or self.claim_lost:
            return
        for private in ("payload.json", "mcp.json"):
            try:
                (ws.job_dir / private).unlink(missing_ok=True)
            except OSError as exc:  # the sweep removes the directory later
                log.warning("private_file_not_removed", file=private, error=str(exc))

    def _cleanup(self) -> None:
        ws = self.workspace
        if ws is None:
            return
        if self.claim_lost:
            # Another worker holds the job now; with a shared job root this directory, its
            # worktree registration and the branch are that worker's live workspace.
            log.warning("claim_lost_workspace_left_alone", job_dir=str(ws.job_dir))
            return
        if self.handed_back:
            log.info("workspace_kept_for_next_attempt", job_dir=str(ws.job_dir))
            return
        row = None
        try:
            row = self.queue.get(self.claim.id)
        except DatabaseUnavailable:
            pass
        if row is None or row.get("claimed_by") != self.settings.worker_id:
            return  # not recorded by us (database gone): the sweep decides later
        # Failed, blocked and cancelled work stays for a person to inspect, and so does a
        # succeeded job's work that is not on its branch (a leftovers patch, big files).
        keep = row["status"] in KEPT_FOR_INSPECTION or (
            row["status"] == "succeeded" and worktree.holds_kept_work(ws))
        if not keep:  # a job that continues this one gets its session files (config.continue_from)
            worktree.remove(ws, self.settings, keep_home=row["status"] == "succeeded"
                            and continue_from.awaited(self.queue, self.claim.id))

