"""``runner logs ID [-f] [--raw]``: one job's log, readable, optionally followed live.

The log of a job is ``$RUNNER_LOG_DIR/jobs/<id>.log``, a relative link to the run log of
the iteration that ran it (``../runs/<file>.log``). A run log holds one iteration, so at
most one job: the whole file is the job's. The supervisor may compress old run logs to
``.log.gz`` and re-point the link; a link whose target was compressed without being
re-pointed is followed to the ``.gz`` too. A retried job's link moves to the new run log;
``-f`` notices and goes on in the new file.

``-f`` stops when the job reaches a final status in the database (checked every second),
or on Ctrl-C. Without a database (DATABASE_URL unset, or down) it follows until Ctrl-C.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

from runner.contract import FINISHED
from runner.errors import DatabaseUnavailable, RunnerError
from runner.lightsettings import LogSettings
from runner.render import Renderer

if TYPE_CHECKING:
    from runner.settings import Settings

# Light imports only (runner.lightsettings): psycopg, SQLAlchemy and pydantic are loaded
# when the database is asked, which rendering a log that is on disk never needs.
FINAL_STATUSES = tuple(s.value for s in FINISHED)

_ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{1,36}$")
_POLL_SECONDS = 0.2
_STATUS_EVERY = 1.0
_DRAIN_SECONDS = 0.5


class _Status:
    """The job's status from the database, tolerant of it being absent or down."""

    def __init__(self, settings: LogSettings | Settings, job_id: str) -> None:
        self.settings, self.job_id = settings, job_id
        self.queue = None

    def _connected(self) -> bool:
        if self.queue is None and self.settings.has_database:
            from runner.dbconn import connect
            from runner.queue import Queue
            try:
                self.queue = Queue(connect(self.settings.dsn, "logs", connect_timeout=3), "cli")
            except DatabaseUnavailable:
                return False
        return self.queue is not None

    def get(self) -> str | None:
        if not self._connected():
            return None
        import psycopg
        try:
            return self.queue.job_status(self.job_id)
        except DatabaseUnavailable:
            self.close()
            return None
        except psycopg.Error:  # not a uuid after all
            return None

    def ids_by_prefix(self, prefix: str) -> list[str]:
        try:
            return self.queue.job_ids_by_prefix(prefix) if self._connected() else []
        except DatabaseUnavailable:
            self.close()
            return []

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
            self.queue = None


def jobs_dir(settings: LogSettings | Settings) -> Path:
    return settings.log_dir / "jobs"


def find_job(settings: LogSettings | Settings, ref: str, status: _Status) -> str:
    """The full job id for ``ref`` (an id, or an unambiguous prefix of one)."""
    ref = ref.strip().lower()
    if not _ID_PREFIX.match(ref):
        raise RunnerError(f"{ref!r} is not a job id or a prefix of one (hex digits and dashes)")
    found = set()
    directory = jobs_dir(settings)
    if directory.is_dir():
        for entry in directory.iterdir():
            name = entry.name
            for suffix in (".log.gz", ".log"):
                if name.endswith(suffix) and not name.startswith("."):
                    job_id = name[: -len(suffix)]
                    if job_id.startswith(ref):
                        found.add(job_id)
                    break
    if not found and len(ref) < 36:
        found.update(status.ids_by_prefix(ref))
    if len(found) > 1:
        shown = ", ".join(sorted(found)[:10])
        raise RunnerError(f"{ref!r} matches {len(found)} jobs ({shown}); give more of the id")
    if not found:
        if len(ref) == 36:
            return ref
        if status.queue is not None:
            raise RunnerError(f"no such job: no job id starts with {ref!r}")
        raise RunnerError(f"no job log matches {ref!r} in {directory}")
    return found.pop()


def log_path(settings: LogSettings | Settings, job_id: str) -> Path | None:
    """The run log the job's link points at now (following links; .gz when compressed)."""
    directory = jobs_dir(settings)
    for link in (directory / f"{job_id}.log", directory / f"{job_id}.log.gz"):
        if not os.path.lexists(link):
            continue
        target = Path(os.path.realpath(link))
        for candidate in (target, target.with_name(target.name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def open_log(path: Path) -> IO[str]:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace", newline="")


class _Printer:
    def __init__(self, raw: bool, live: bool = False) -> None:
        self.raw, self.live = raw, live
        self.renderer = Renderer()

    def line(self, text: str) -> None:
        out = [text.rstrip("\n")] if self.raw else self.renderer.line(text)
        for line in out:
            sys.stdout.write(line + "\n")
        if self.live:  # a whole log is written in big buffered blocks; a followed one at once
            sys.stdout.flush()

    def lines(self, lines: Iterator[str]) -> None:
        """A whole log: rendered lines written in blocks, not one write each."""
        render = (lambda text: [text.rstrip("\n")]) if self.raw else self.renderer.line
        write, block = sys.stdout.write, []
        for text in lines:
            block += render(text)
            if len(block) >= 512:
                block.append("")
                write("\n".join(block))
                block = []
        if block:
            block.append("")
            write("\n".join(block))

    def closing(self) -> None:
        if not self.raw:
            for line in self.renderer.closing():
                sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def idle(self) -> None:
        if not self.raw:
            for line in self.renderer.flush():
                sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _lines(fh: IO[str], pending: list[str]) -> Iterator[str]:
    """Whole lines read so far; a partial last line waits in ``pending`` for its end."""
    chunk = fh.read()
    if not chunk:
        return
    parts = (pending.pop() if pending else "") + chunk
    *complete, rest = parts.split("\n")
    if rest:
        pending.append(rest)
    yield from complete


def show_logs(settings: LogSettings | Settings, ref: str, *, follow: bool = False, raw: bool = False) -> int:
    status = _Status(settings, "")
    try:
        job_id = find_job(settings, ref, status)
        status.job_id = job_id
        printer = _Printer(raw, live=follow)
        return _follow(settings, job_id, status, printer) if follow \
            else _print(settings, job_id, status, printer)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `runner logs … | head`
        sys.stderr.close()
        return 0
    finally:
        status.close()


def _print(settings: LogSettings | Settings, job_id: str, status: _Status, printer: _Printer) -> int:
    path = log_path(settings, job_id)
    if path is None:
        state = status.get()
        if state is None and status.queue is not None:
            raise RunnerError(f"no such job {job_id}")
        why = f"its status is {state}" if state else "no such log"
        raise RunnerError(f"job {job_id} has no log in {jobs_dir(settings)} ({why})")
    with open_log(path) as fh:
        printer.lines(fh)
    printer.idle()
    printer.closing()
    return 0


def _follow(settings: LogSettings | Settings, job_id: str, status: _Status, printer: _Printer) -> int:
    if not settings.has_database:
        print("runner logs: DATABASE_URL is not set; following until Ctrl-C", file=sys.stderr)
    path = log_path(settings, job_id)
    last_check = 0.0
    if path is None:
        print(f"runner logs: waiting for job {job_id} to start…", file=sys.stderr)
        while path is None:
            state = status.get()
            if state in FINAL_STATUSES:
                raise RunnerError(f"job {job_id} ended ({state}) without a log here")
            time.sleep(_STATUS_EVERY)
            path = log_path(settings, job_id)
    from runner.filewatch import FileWatch  # ctypes: only to follow

    fh = open_log(path)
    watch = FileWatch(path)
    pending: list[str] = []
    final_since: float | None = None
    try:
        while True:
            got = False
            for line in _lines(fh, pending):
                printer.line(line)
                got = True
            if got:
                continue
            printer.idle()
            now = time.monotonic()
            if final_since is not None and now - final_since >= _DRAIN_SECONDS:
                if pending:
                    printer.line(pending.pop())
                printer.closing()
                return 0
            if now - last_check >= _STATUS_EVERY:
                last_check = now
                if final_since is None and status.get() in FINAL_STATUSES:
                    final_since = now
                moved = log_path(settings, job_id)
                if moved is not None and moved != path and final_since is None:
                    if pending:
                        printer.line(pending.pop())
                    fh.close()
                    print(f"runner logs: the job runs again; now {moved}", file=sys.stderr)
                    path, fh = moved, open_log(moved)
                    watch.close()
                    watch = FileWatch(path)
                    printer.renderer = Renderer()
            watch.wait(_POLL_SECONDS if watch.polling else _STATUS_EVERY)
    finally:
        fh.close()
        watch.close()
