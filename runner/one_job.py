"""One iteration of the worker: ``python -m runner.one_job`` (see docs and DESIGN.md).

    settings → presence + reconcile → claim, or LISTEN until the wait deadline
    → the job's log → run the job (runner.job) → exit code for the supervisor

Exit codes: 0 a job reached a recorded state or none came; 1 the iteration failed;
3 the agent's credentials were rejected; 4 the agent hit its usage limit; 143 stopped.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import structlog

from runner import isolation, logs, quota, repo_cache, spare, staging, state, webhook
from runner.errors import DatabaseUnavailable, IterationError, SettingsError
from runner.contract import Exit
from runner.job import JobRun
from runner.listen import Listener, Poller, SharedListener, wait_and_claim
from runner.queue import Claim, Queue
from runner.reconcile import end_orphaned_agent, reconcile
from runner.sweep import sweep
from runner.settings import Settings, load_settings

log = structlog.get_logger("runner.one_job")


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return Exit.FAILED
    try:
        agent = settings.agent  # before anything is claimed: a bad user is a bad setting
        if not agent.isolated and settings.require_agent_isolation:
            isolation.check(agent, True, settings.state_dir, settings.worker_id)
        isolation.protect_dirs(settings)
    except SettingsError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return Exit.FAILED
    _not_dumpable()
    sink, run_log = logs.setup(settings)
    isolation.check(agent, False, settings.state_dir, settings.worker_id)
    stop = _stop_on_signals()
    logs.bind(worker_id=settings.worker_id)
    if state.supervisor_stopping(settings.state_dir):  # its SIGTERM may never have reached us
        log.warning("stop_requested", signal="supervisor stopping (state.json)")
        return Exit.STOPPED
    started, code = time.monotonic(), Exit.FAILED
    try:
        code = iterate(settings, sink, run_log, stop)
        return code
    except IterationError as exc:
        log.error("iteration_failed", error=str(exc))
        return Exit.FAILED
    except Exception:
        log.exception("iteration_crashed")
        return Exit.FAILED
    finally:
        _record_iteration(settings, time.monotonic() - started, code)
        sink.close()


def iterate(settings: Settings, sink: logs.Sink, run_log, stop: threading.Event) -> int:
    with Queue.open(settings.dsn, settings.worker_id) as queue:
        queue.worker_seen("starting", queues=settings.queues)
        end_orphaned_agent(settings.state_dir, settings.worker_id, settings.agent)
        reconcile(queue)
        prune_now_and_then(queue, settings)
        sweep(queue, settings)
        webhook.deliver_due(queue, settings)
        if not quota.gate(settings, stop, lambda: queue.worker_seen("quota_wait", queues=settings.queues)):
            return Exit.STOPPED
        claim = claim_or_wait(queue, settings, stop, run_log)
        if claim is None:
            queue.worker_seen("idle", queues=settings.queues)
            log.info("no_job", waited_seconds=settings.wait_seconds, stopped=stop.is_set())
            return Exit.STOPPED if stop.is_set() else Exit.OK
        # (the worker's row already says "running" with this job: the claim wrote it)
        run = JobRun(settings, queue, claim, sink, run_log, stop)
        code = run.run()
        queue.worker_seen("idle", queues=settings.queues)
        if not stop.is_set():  # a stopping worker leaves deliveries to the next one
            webhook.deliver_due(queue, settings)  # the job just recorded, told at once
        after_the_job(run, settings, stop)
        return code


def after_the_job(run: JobRun, settings: Settings, stop: threading.Event) -> None:
    """The mirror's upkeep and a checkout of the job's repository for the next iteration's
    job (runner/spare.py): after the job is recorded, so neither delays a job's record,
    only the next claim (by the time they take). Not when stopping, nor for a job another
    worker holds."""
    ws = run.workspace
    if ws is None or ws.mirror is None or run.claim_lost or stop.is_set():
        return
    repo_cache.upkeep(ws.mirror, settings)  # never raises
    spare.replenish(settings, ws.mirror)  # logs spare_made with its ms; never raises


def prune_now_and_then(queue: Queue, settings: Settings) -> None:
    """Delete old finished jobs, at most once an hour per worker, a batch at a time."""
    if not settings.prune_after_days:
        return
    stamp = settings.state_dir / "last_prune"
    if stamp.exists() and time.time() - stamp.stat().st_mtime < 3600:
        return
    deleted = queue.prune_finished(settings.prune_after_days)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    if deleted:
        log.info("pruned_finished_jobs", count=deleted, older_than_days=settings.prune_after_days)


# Expired leases and jobs whose dependency failed are looked for at the first claim and
# then at most this often (never more often than the poll; at most every half lease): a
# NOTIFY wake-up goes straight to the claim, and a waiting worker's poll is one statement,
# not three. A crashed worker's job comes back within its lease and this much.
HOUSEKEEPING_SECONDS = 30.0


def claim_or_wait(queue: Queue, settings: Settings, stop: threading.Event,
                  run_log: Path | None = None) -> Claim | None:
    last_requeue = -float("inf")
    every = max(settings.poll_seconds, min(HOUSEKEEPING_SECONDS, settings.lease_seconds / 2))

    def claim() -> Claim | None:
        nonlocal last_requeue
        if time.monotonic() - last_requeue >= every:
            last_requeue = time.monotonic()
            requeued = queue.requeue_expired()
            if requeued:
                log.warning("expired_leases_requeued", jobs=[str(j) for j in requeued])
            failed = queue.fail_dependents()
            if failed:
                log.info("dependents_failed", jobs=[str(j) for j in failed])
        return queue.claim(settings.queues, settings.lease_seconds, settings.concurrency_limits,
                           settings.default_agent)

    listener: Listener
    if settings.listen_dsn is None:
        _say_once_polling(settings)
        listener = Poller(settings.worker_id, settings.queues)
    elif settings.listen_dsn == settings.dsn and queue.dsn == settings.dsn:
        listener = SharedListener(queue, settings.queues)  # one connection per waiting worker
    else:
        listener = Listener(settings.listen_dsn, settings.worker_id, settings.queues)
    return wait_and_claim(claim, listener, wait_seconds=settings.wait_seconds,
                          poll_seconds=settings.poll_seconds, stop=stop,
                          presence=lambda: _presence(queue, settings),
                          waiting=lambda: _begin_waiting(queue, settings, run_log))


def _say_once_polling(settings: Settings) -> None:
    """Once per worker (a stamp in the state dir), not every iteration."""
    stamp = settings.state_dir / "said_polling"
    if stamp.exists():
        return
    log.warning("listen_unavailable_polling", poll_seconds=settings.poll_seconds, why=(
        "DATABASE_URL goes through a transaction-mode connection pooler, where LISTEN/NOTIFY "
        "does not work; new jobs are seen by polling every RUNNER_POLL_SECONDS. Set "
        "RUNNER_LISTEN_DATABASE_URL to a direct (unpooled) URL to be woken at once"))
    try:
        stamp.touch()
    except OSError:
        pass


def _begin_waiting(queue: Queue, settings: Settings, run_log: Path | None) -> None:
    """The queue was empty: say so, and use the time to spare for the job to come: its
    files made ahead (runner/staging.py) and the connection's backend warmed for its claim
    (Queue.warm_up)."""
    _seen(queue, "waiting", settings)
    if run_log is not None:
        staging.stage(settings, run_log)
    queue.warm_up(settings.default_agent)


def _seen(queue: Queue, state_name: str, settings: Settings) -> None:
    """The worker row's state (`runner workers`); a failure here is no reason to stop."""
    try:
        queue.worker_seen(state_name, queues=settings.queues)
    except DatabaseUnavailable as exc:
        log.warning("worker_presence_failed", error=str(exc))


def _presence(queue: Queue, settings: Settings) -> None:
    try:
        queue.touch_worker()  # `runner workers` shows a waiting worker as alive
    except DatabaseUnavailable as exc:
        log.warning("worker_presence_failed", error=str(exc))
    webhook.deliver_due(queue, settings)  # retries fall due while the queue is empty


def _record_iteration(settings: Settings, seconds: float, code: int) -> None:
    try:
        job_id = structlog.contextvars.get_contextvars().get("job_id")
        state.record_iteration(settings.state_dir, seconds, code, job_id)
    except OSError as exc:
        log.warning("iteration_not_recorded", error=str(exc))


def _not_dumpable() -> None:
    """Keep /proc/<pid>/environ and memory (DATABASE_URL, RUNNER_GIT_TOKEN) away from the
    agent, which runs as the same user. Best effort: Linux only."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if not stop.is_set():
            log.warning("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


if __name__ == "__main__":
    sys.exit(main())
