"""The supervisor's decisions, as a helper process of bin/run-agent.sh.

The shell keeps what only a shell must do: start each iteration, pass signals on, wait,
and sleep so that a signal ends the sleep at once. Everything else is decided here, in
tested Python: the settings, state.json (refreshed every heartbeat while the shell
waits), what each exit code means (backoff, UNHEALTHY, TOKEN_EXPIRED, the usage-limit
sleep), run log names and their rotation.

``python -m runner.supervise SUPERVISOR_PID`` speaks a line protocol on stdin/stdout.
The shell says what happened; each answer is the next thing for it to do:

    shell → here                       here → shell
    (start)                            env NAME VALUE … / arg WORD … / ready   (or fatal)
    begin                              run RUN_LOG  |  wait SECONDS  |  exit CODE
    child PID                          ok
    stopping SIGNAL                    ok
    exited CODE                        run … | wait … | exit …
    woke                               run … | wait … | exit …
    stopped SIGNAL                     exit CODE

This process ignores SIGINT/SIGTERM/SIGHUP (a Ctrl-C or ``docker stop`` reaches the
whole group; the shell decides) and ends when the shell closes its stdin.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from runner import logrotate, retry
from runner.contract import Exit, StateFile, SupervisorStatus as Status
from runner.errors import SettingsError
from runner.supervise_settings import SupervisorSettings, load_supervisor_settings

EXIT_ON_SIGNAL = {"INT": 130, "HUP": 129, "TERM": 143}


def log(message: str) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        print(f"{now} run-agent: {message}", file=sys.stderr, flush=True)
    except OSError:  # stderr was a pipe whose reader is gone (`| tee`, then Ctrl-C)
        pass


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def secs(value: float) -> str:
    """5s, 0.05s, 1.5s — as the supervisor's log lines have always said it."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def write_atomic(path: Path, text: str) -> bool:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        log(f"could not write {path}")
        return False


class Supervisor:
    """The state of the loop and what each event makes of it."""

    def __init__(self, settings: SupervisorSettings, pid: int) -> None:
        self.s, self.pid = settings, pid
        self.worker_id = settings.effective_worker_id(pid)
        self.runs, self.jobs = settings.log_dir / "runs", settings.log_dir / "jobs"
        self.state_dir = settings.state_dir
        self.status = Status.STARTING
        self.iteration = self.failures = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.last_exit: int | None = None
        self.run_log: Path | None = None
        self.backoff_until: float | None = None
        self.usage_reset_at: float | None = None
        self.child: int | None = None
        self.stop_signal: str | None = None
        self.waiting_for_credential: str | None = None  # the fingerprint while TOKEN_EXPIRED
        self.after_wait = ""  # what to say when a wait is over
        self._last_stamp, self._seq = "", 0

    # -- state files -------------------------------------------------------------------

    def file(self, name: StateFile) -> Path:
        return self.state_dir / name

    def current_job(self) -> str | None:
        try:
            with open(self.file(StateFile.CURRENT_JOB), "rb") as fh:
                raw = fh.readline(200)
        except OSError:
            return None
        text = "".join(c if " " <= c <= "~" else "?" for c in raw.decode("ascii", "replace").rstrip("\r\n"))
        return text.rstrip() or None

    def write_state(self) -> None:
        state = {
            "status": str(self.status), "supervisor_pid": self.pid, "worker_id": self.worker_id,
            "iteration": self.iteration, "iteration_started_at": iso(self.started_at),
            "last_exit_code": self.last_exit, "last_iteration_finished_at": iso(self.finished_at),
            "consecutive_failures": self.failures, "current_job": self.current_job(),
            "run_log": str(self.run_log) if self.run_log else None,
            "backoff_until": iso(self.backoff_until), "usage_limit_reset_at": iso(self.usage_reset_at),
            "updated_at": iso(time.time()),
        }
        write_atomic(self.file(StateFile.STATE), json.dumps(state, indent=2) + "\n")

    # -- start -------------------------------------------------------------------------

    def start(self) -> list[str]:
        for folder in (self.runs, self.jobs, self.state_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                raise SettingsError(f"cannot create directory {folder}; exiting") from None
        marker = self.file(StateFile.TOKEN_EXPIRED)
        if marker.exists():
            marker.unlink(missing_ok=True)
            log("removed a TOKEN_EXPIRED marker left from before the restart; trying again")
        self.write_state()
        log(f"starting (pid {self.pid}, worker {self.worker_id}): command "
            f"'{self.s.iteration_command}', logs in {self.s.log_dir}, state in {self.state_dir}")
        return [f"env RUNNER_LOG_DIR {self.s.log_dir}", f"env RUNNER_STATE_DIR {self.state_dir}",
                f"env RUNNER_WORKER_ID {self.worker_id}",
                *(f"arg {word}" for word in self.s.command), "ready"]

    # -- events ------------------------------------------------------------------------

    def handle(self, line: str) -> str:
        verb, _, arg = line.strip().partition(" ")
        if verb == "begin":
            return self.begin()
        if verb == "child":
            self.child = int(arg)
            return "ok"
        if verb == "stopping":
            self.note_stop(arg)
            return "ok"
        if verb == "exited":
            return self.exited(int(arg))
        if verb == "woke":
            return self.woke()
        if verb == "stopped":
            self.stop_signal = self.stop_signal or arg or "TERM"
            return self.finish()
        raise ValueError(f"unknown request {line!r}")

    def begin(self) -> str:
        if self.stop_signal:
            return self.finish()
        self.rotate()
        self.iteration += 1
        self.started_at = time.time()
        self.backoff_until = self.usage_reset_at = None
        self.run_log = self.new_run_log()
        if self.run_log is None:
            log(f"iteration {self.iteration}: cannot create a run log in {self.runs}; counting it as failed")
            self.last_exit, self.finished_at = Exit.FAILED.value, self.started_at
            return self.failed(Exit.FAILED)
        self.status = Status.RUNNING
        self.write_state()
        log(f"iteration {self.iteration} starting; output in {self.run_log}")
        return f"run {self.run_log}"

    def note_stop(self, sig: str) -> None:
        if self.stop_signal:
            return
        self.stop_signal = sig or "TERM"
        self.status = Status.STOPPING
        self.write_state()
        log(f"received SIG{self.stop_signal}; sent SIGTERM to iteration {self.iteration} "
            f"(pid {self.child}), waiting for it")

    def exited(self, code: int) -> str:
        code = code if 0 <= code <= 255 else 255  # bash says -1 for a status it lost
        self.child, self.last_exit, self.finished_at = None, code, time.time()
        stale = self.current_job()
        if self.file(StateFile.CURRENT_JOB).exists():
            self.file(StateFile.CURRENT_JOB).unlink(missing_ok=True)
            log(f"iteration {self.iteration} left current_job ({stale}) behind; removed it")
        if self.stop_signal:
            return self.finish()
        if code == Exit.OK:
            return self.succeeded()
        if code == Exit.TOKEN_EXPIRED:
            return self.token_expired()
        if code == Exit.USAGE_LIMIT:
            return self.usage_limited()
        return self.failed(code)

    def woke(self) -> str:
        if self.stop_signal:
            return self.finish()
        if self.status is Status.TOKEN_EXPIRED:
            if self.fingerprint() == self.waiting_for_credential:
                return f"wait {self.s.token_check_seconds}"
            self.file(StateFile.TOKEN_EXPIRED).unlink(missing_ok=True)
            log("the credential changed; removed TOKEN_EXPIRED; resuming")
        elif self.status is Status.USAGE_LIMITED:
            log("usage-limit wait over; going on")
        self.backoff_until = self.usage_reset_at = None
        self.status = Status.RUNNING
        self.write_state()
        return self.begin()

    def finish(self) -> str:
        code = EXIT_ON_SIGNAL.get(self.stop_signal or "TERM", 143)
        self.backoff_until = None
        self.status = Status.STOPPED
        self.write_state()
        log(f"stopped on SIG{self.stop_signal}; exiting {code}")
        return f"exit {code}"

    # -- what each exit code means -----------------------------------------------------

    def succeeded(self) -> str:
        self.failures = 0
        self.status = Status.RUNNING
        self.write_state()
        if self.file(StateFile.UNHEALTHY).exists():
            self.file(StateFile.UNHEALTHY).unlink(missing_ok=True)
            log(f"iteration {self.iteration} succeeded; removed UNHEALTHY")
        return self.begin()

    def failed(self, code: int) -> str:
        self.failures += 1
        wait = retry.backoff(self.s.backoff_start, self.s.backoff_max, self.failures)
        note = " (SIGTERM, but not from this supervisor)" if code == Exit.STOPPED else ""
        if self.failures >= self.s.max_consecutive_failures:
            wait = self.s.backoff_max  # unhealthy: stay up, retrying at the longest backoff
            write_atomic(self.file(StateFile.UNHEALTHY), (
                f"{self.failures} iterations in a row failed; the last one (iteration "
                f"{self.iteration}) exited {code} at {iso(self.finished_at)}; its output is in "
                f"{self.run_log}. The supervisor keeps retrying every {secs(wait)} and removes "
                f"this file after the next successful iteration.\n"))
            note += "; wrote UNHEALTHY"
        self.backoff_until = time.time() + wait
        self.status = Status.BACKOFF
        self.write_state()
        plural = "s" if self.failures > 1 else ""
        log(f"iteration {self.iteration} exited {code}{note}; backing off {secs(wait)} "
            f"({self.failures} failure{plural} in a row)")
        return f"wait {wait}"

    def token_expired(self) -> str:
        self.waiting_for_credential = self.fingerprint()
        every = secs(self.s.token_check_seconds)
        sources = ", ".join(str(p) for p in self.s.credential_paths)
        sources = f"{sources + ', or ' if sources else ''}{self.file(StateFile.CREDENTIAL_ENV)}"
        write_atomic(self.file(StateFile.TOKEN_EXPIRED), (
            f"The agent's credentials were rejected: iteration {self.iteration} exited 3 at "
            f"{iso(self.finished_at)}; its output is in {self.run_log}.\n"
            f"No jobs are claimed until the credential changes.\n"
            f"What to do: replace the credential ({sources}). The supervisor checks every {every}, "
            f"removes this file and resumes by itself; restarting the container also removes it "
            f"and tries again.\n"))
        self.status = Status.TOKEN_EXPIRED
        self.write_state()
        log(f"iteration {self.iteration} exited 3: the agent's credentials were rejected; wrote "
            f"TOKEN_EXPIRED; claiming nothing until the credential changes (checking every {every})")
        return f"wait {self.s.token_check_seconds}"

    def usage_limited(self) -> str:
        path = self.file(StateFile.USAGE_LIMIT_RESET)
        now = time.time()
        raw = _first_line(path)
        if raw is not None and raw.isdigit() and len(raw) <= 12:
            self.usage_reset_at = float(raw)
            until = iso(self.usage_reset_at)
            wait = self.usage_reset_at - now
            if wait <= 0:
                wait = self.s.backoff_start
                how = f"the reset time {until} has passed already; going on in {secs(wait)}"
            elif wait > self.s.usage_limit_max_sleep:
                wait = self.s.usage_limit_max_sleep
                how = f"sleeping until {until} capped at RUNNER_USAGE_LIMIT_MAX_SLEEP ({secs(wait)})"
            else:
                how = f"sleeping until {until} ({secs(wait)})"
        else:
            self.usage_reset_at, wait = None, self.s.backoff_max
            how = (f"{path} does not hold a Unix time ('{raw}'); sleeping RUNNER_BACKOFF_MAX ({secs(wait)})"
                   if raw is not None else
                   f"{path} is missing; sleeping RUNNER_BACKOFF_MAX ({secs(wait)})")
        self.status = Status.USAGE_LIMITED
        self.write_state()
        log(f"iteration {self.iteration} exited 4: usage limit reached; {how}")
        return f"wait {wait}"

    # -- helpers -----------------------------------------------------------------------

    def fingerprint(self) -> str:
        """A hash over the credential sources (paths and contents; missing counts too)."""
        digest = hashlib.sha256()
        for path in [*self.s.credential_paths, self.file(StateFile.CREDENTIAL_ENV)]:
            try:
                digest.update(f"{path} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
            except OSError:
                digest.update(f"{path} missing\n".encode())
        return digest.hexdigest()

    def new_run_log(self) -> Path | None:
        """runs/<UTC timestamp>-<n>.log, created here so that it is unique."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._seq = self._seq + 1 if stamp == self._last_stamp else 1
        self._last_stamp = stamp
        for _ in range(1000):
            path = self.runs / f"{stamp}-{self._seq}.log"
            if not path.with_name(path.name + ".gz").exists():
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                    return path
                except FileExistsError:
                    pass
                except OSError:
                    return None
            self._seq += 1
        return None

    def rotate(self) -> None:
        done = logrotate.rotate(self.runs, self.jobs, self.s.log_gzip_after_hours * 3600,
                                self.s.log_delete_after_days * 86400)
        for problem in done.problems:
            log(problem)
        if done.summary():
            log(done.summary())


def _first_line(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            raw = fh.readline(64).decode("ascii", "replace")
    except OSError:
        return None
    cleaned = "".join(c if c.isalnum() or c in ":.+ -" else "?" for c in raw.rstrip("\r\n"))
    return cleaned.strip()


def serve(sup: Supervisor, heartbeat: float) -> None:
    """Answer the shell line by line; refresh state.json whenever it is quiet a heartbeat."""
    buffer = b""
    while True:
        ready, _, _ = select.select([0], [], [], heartbeat)
        if not ready:
            sup.write_state()
            continue
        chunk = os.read(0, 4096)
        if not chunk:
            return  # the shell is gone
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            reply = sup.handle(line.decode("utf-8", "replace"))
            os.write(1, (reply + "\n").encode())


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    pid = int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else os.getppid()
    try:
        settings = load_supervisor_settings()
        sup = Supervisor(settings, pid)
        greeting = sup.start()
    except SettingsError as exc:
        log(str(exc))
        os.write(1, b"fatal\n")
        return 1
    os.write(1, ("\n".join(greeting) + "\n").encode())
    serve(sup, settings.state_heartbeat_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
