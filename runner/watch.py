"""``runner jobs --watch``: the jobs table, redrawn live.

Driven by LISTEN on ``runner_jobs`` (every status change and every progress snapshot of a
running job is announced; a running job shows its latest progress): a notification
redraws at most a few times a second, and the table is also redrawn every few seconds
(time columns, a missed notification). A dropped connection is reopened; Ctrl-C exits 0.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime

import psycopg

from runner.errors import DatabaseUnavailable
from runner.tables import table
from runner.dbconn import connect
from runner.queue import Queue
from runner.schema import NOTIFY_CHANNEL
from runner.settings import Settings

MIN_REDRAW_SECONDS = 0.25
REFRESH_SECONDS = 3.0
_CLEAR = "\x1b[H\x1b[2J"


def frame(rows: list[dict], title: str) -> str:

    from runner.progress import summary

    for r in rows:
        r["tries"] = f"{r['attempts']}/{r['max_attempts']}"
        # A running job's latest progress (a notification redraws it); others their error.
        r["progress"] = summary(r.get("progress")) if r["status"] in ("claimed", "running") else None
    body = table(rows, ["id", "queue", "status", "priority", "tries", "claimed_by", "updated_at",
                        "progress", "error"])
    return f"{title}\n\n{body}\n"


def watch_jobs(settings: Settings, *, status: str | None = None, queue: str | None = None,
               limit: int = 50) -> int:
    tty = sys.stdout.isatty()
    q: Queue | None = None
    listen: psycopg.Connection | None = None
    try:
        while True:
            try:
                if q is None:
                    q = Queue.open(settings.dsn, f"cli:{settings.worker_id}", "watch")
                    if settings.listen_dsn is not None:  # else (behind a pooler): redraw on a timer
                        listen = connect(settings.listen_dsn, "watch-listen")
                        listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
                rows = q.list(status=status, queue=queue, limit=limit)
                title = (f"runner jobs --watch  {datetime.now():%H:%M:%S}  "
                         f"({len(rows)} shown; Ctrl-C to stop)")
                sys.stdout.write((_CLEAR if tty else "") + frame(rows, title))
                sys.stdout.flush()
                drawn = time.monotonic()
                _wait_for_change(listen, drawn)
            except (DatabaseUnavailable, psycopg.OperationalError) as exc:
                print(f"runner jobs --watch: {' '.join(str(exc).split())}; retrying", file=sys.stderr)
                for conn in (q, listen):
                    if conn is not None:
                        conn.close()
                q = listen = None
                time.sleep(REFRESH_SECONDS)
    except KeyboardInterrupt:
        return 0
    finally:
        for conn in (q, listen):
            if conn is not None:
                conn.close()


def _wait_for_change(listen: psycopg.Connection | None, drawn: float) -> None:
    """Until a notification (no sooner than MIN_REDRAW_SECONDS after the last frame) or
    REFRESH_SECONDS have passed."""
    deadline = drawn + REFRESH_SECONDS
    if listen is None:
        time.sleep(max(0.0, deadline - time.monotonic()))
        return
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        for _note in listen.notifies(timeout=remaining, stop_after=1):
            pause = drawn + MIN_REDRAW_SECONDS - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            return
