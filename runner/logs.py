"""The iteration's output: the runner's own lines (structlog) and the agent's, in one log.

Under the supervisor, stdout *is* ``logs/runs/<timestamp>.log`` (``RUNNER_RUN_LOG``).
Run by hand, the iteration opens such a file itself. Either way ``logs/jobs/<id>.log``
is a relative link to it, so ``tail -f`` on a job's log shows the agent live, and the
link survives a bind mount at another path.

Every line passes the redactor: the values of the runner's secrets never reach a log.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import structlog

from runner import secrets, staging
from runner.secrets import REDACTED, Redactor, secret_values  # noqa: F401 - REDACTED for callers
from runner.settings import Settings


def secrets_of(settings: Settings) -> list[str]:
    return secret_values(settings)


class Sink:
    """Writes whole lines to stdout and, when the iteration opened one, its own run log."""

    def __init__(self, redactor: Redactor, extra: IO[str] | None = None) -> None:
        self.redact = redactor
        self.extra = extra
        # Reentrant: the SIGTERM handler logs, and may run in the main thread while that
        # thread is inside write_line (a plain Lock deadlocked the iteration there). Its
        # line then waits in _pending: writing it at once would re-enter the stream's
        # buffer, which raises RuntimeError ("reentrant call") in the interrupted write —
        # an iteration stopped by SIGTERM exited 1 instead of 143 (tests/test_quota.py).
        self.lock = threading.RLock()
        self._writing = False
        self._pending: list[str] = []

    def write_line(self, line: str) -> None:
        line = self.redact(secrets.storable(line.rstrip("\n"))) + "\n"
        with self.lock:
            if self._writing:  # a signal handler's line, in the middle of this thread's
                self._pending.append(line)
                return
            self._writing = True
            try:
                self._write(line)
                while self._pending:
                    self._write(self._pending.pop(0))
            finally:
                self._writing = False

    def _write(self, line: str) -> None:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
            if self.extra is not None:
                self.extra.write(line)
                self.extra.flush()
        except (OSError, ValueError) as exc:
            self._fall_back(line, exc)

    # A full or broken log disk must not crash the iteration (it would crash right after
    # every claim): lines go to stderr instead, and the cause is kept for the outcome.
    fault: str | None = None

    def _fall_back(self, line: str, exc: BaseException) -> None:
        if self.fault is None:
            self.fault = ("log directory full" if getattr(exc, "errno", None) == errno.ENOSPC
                          else f"the log cannot be written: {exc}")
            try:
                sys.stderr.write(f"runner: {self.fault}; logging to stderr\n")
            except (OSError, ValueError):
                pass
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def agent_line(self, stream: str, line: str) -> None:
        # The agent's line as it came, after the time the runner read it (its events carry
        # no time of their own) and which stream it came on: `runner logs` renders both.
        when = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        tag = "agent" if stream == "stdout" else "agent stderr"
        self.write_line(f"[{tag} {when}] {line}")

    def close(self) -> None:
        with self.lock:
            while self._pending and not self._writing:  # a handler's line still waiting
                self._write(self._pending.pop(0))
        if self.extra is not None:
            try:
                self.extra.close()
            except OSError as exc:  # the last buffered lines could not be written
                self._fall_back("", exc)


class _SinkLogger:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def msg(self, message: str) -> None:
        self.sink.write_line(message)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _time_level_event_first(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    head = {k: event.pop(k) for k in ("timestamp", "level", "event") if k in event}
    return {**head, **event}


def run_log_path(settings: Settings) -> tuple[Path, bool]:
    """The run log: the supervisor's (RUNNER_RUN_LOG), or a new one of our own."""
    given = os.environ.get("RUNNER_RUN_LOG")
    if given:
        return Path(given).resolve(), False
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return settings.log_dir / "runs" / f"{stamp}-{os.getpid()}.log", True


def setup(settings: Settings) -> tuple[Sink, Path]:
    run_log, ours = run_log_path(settings)
    extra = None
    if ours:
        run_log.parent.mkdir(parents=True, exist_ok=True)
        extra = open(run_log, "a", encoding="utf-8")  # noqa: SIM115 - lives for the process
    sink = Sink(secrets.install(settings), extra)
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if sys.stdout.isatty() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
                     else structlog.processors.JSONRenderer(default=str))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _time_level_event_first,
            renderer,
        ],
        logger_factory=lambda *args: _SinkLogger(sink),
        cache_logger_on_first_use=False,
    )
    return sink, run_log


def link_job_log(settings: Settings, job_id: str, run_log: Path) -> Path:
    """logs/jobs/<id>.log -> ../runs/<file> (relative). A retried job's link moves on."""
    jobs_dir = settings.log_dir / "jobs"
    link = jobs_dir / f"{job_id}.log"
    try:
        target = os.path.relpath(run_log, jobs_dir)
        if staging.take_link(settings, link, target):  # made while the worker waited
            return link
        jobs_dir.mkdir(parents=True, exist_ok=True)
        tmp = jobs_dir / f".{job_id}.log.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
    except OSError as exc:
        # Not worth a job's attempt: the run log still has every line.
        structlog.get_logger("runner.logs").warning("job_log_link_failed", error=str(exc))
    return link


def bind(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**{k: str(v) for k, v in values.items()})


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
