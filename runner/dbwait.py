"""``python -m runner.dbwait SECONDS``: wait until the queue database answers.

The container's entrypoint runs this before ``runner migrate``: a database started by the
same ``docker compose up`` (or a NAS booting) may take a while. Lines go to stderr in the
entrypoint's format and name the database as host:port/dbname, never the URL or its
password (driver messages are scrubbed). DATABASE_URL may come from DATABASE_URL_FILE.

Exit 0 when it answered, 1 when it did not within SECONDS or the setting is unusable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from runner import dburl
from runner.errors import RunnerError, SettingsError
from runner.lightsettings import libpq_dsn, load_secret_files

SAY_EVERY_S = 10
RETRY_EVERY_S = 2


class DatabaseNotReachable(RunnerError):
    """The database did not answer in time."""


def say(message: str) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{when} entrypoint: {message}", file=sys.stderr, flush=True)


def _connect(dsn: str, timeout: int) -> None:
    import psycopg

    psycopg.connect(dsn, connect_timeout=timeout).close()


def wait(url: str, seconds: int, *, connect: Callable[[str, int], None] = _connect,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         report: Callable[[str], None] = say) -> float:
    """Try until ``connect`` succeeds; return the seconds it took. The last failure's
    message (scrubbed) is in the DatabaseNotReachable raised after ``seconds``."""
    dburl.check(url)
    where = dburl.describe(url)
    dsn = libpq_dsn(url)
    report(f"waiting up to {seconds}s for the database at {where}")
    start = clock()
    last_said = -SAY_EVERY_S
    while True:
        elapsed = clock() - start
        try:
            connect(dsn, max(2, min(5, int(seconds - elapsed))))
            return clock() - start
        except Exception as exc:  # noqa: BLE001 - every driver error means "not yet"
            reason = " ".join(str(exc).split()) or type(exc).__name__
            reason = dburl.scrub(reason, url)[:300]
        elapsed = clock() - start
        if elapsed >= seconds:
            raise DatabaseNotReachable(
                f"database at {where} not reachable after {int(elapsed)}s: {reason} (check "
                f"DATABASE_URL and that the server is up; RUNNER_DB_WAIT_SECONDS={seconds})")
        if elapsed - last_said >= SAY_EVERY_S:
            report(f"database not reachable yet ({int(elapsed)}s/{seconds}s): {reason}")
            last_said = elapsed
        sleep(RETRY_EVERY_S)


def main(argv: list[str]) -> int:
    try:
        seconds_text = argv[0] if argv else "60"
        if not seconds_text.isdigit():
            raise SettingsError(f"RUNNER_DB_WAIT_SECONDS must be a number of seconds, got {seconds_text!r}")
        load_secret_files()
        url = os.environ.get("DATABASE_URL") or os.environ.get("RUNNER_DATABASE_URL") or ""
        if not url:
            raise SettingsError("DATABASE_URL is not set (nor DATABASE_URL_FILE); see docker/.env.example")
        took = wait(url, int(seconds_text))
    except RunnerError as exc:
        say(f"ERROR: {exc}")
        return 1
    say(f"database reachable after {int(took)}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
