"""``runner answer ID "text"``: a person answers a blocked job's question, and
``runner jobs --status blocked``: the questions waiting for one.

The answer goes through the database function ``runner_answer(job, text, by)``
(migration 0005_answer; the web app calls the same, docs/live.md): only a blocked job is
answered; it is queued again with its attempt given back (asking is not failing), and its
next attempt continues on the same branch — Claude resumes its session with the question
and answer as the next message; other agents get them in a note after the prompt.

A question unanswered for RUNNER_BLOCKED_EXPIRE_HOURS is listed as expired; it stays blocked
and can still be answered: expiring decides nothing but what the listing shows (and how
long its directory, with the session to resume, is kept: runner/sweep.py).
"""

from __future__ import annotations

import sys
from typing import Any

from runner import question
from runner.errors import RunnerError
from runner.queue import Queue
from runner.settings import Settings
from runner.tables import table

MAX_ANSWER_CHARS = 20_000  # as runner_answer() keeps


class BadAnswer(RunnerError):
    """The answer cannot be given as it is."""


def waited(seconds: Any) -> str:
    """3d04h, 2h05m, 4m — how long a question has waited."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m"


def expired(row: dict[str, Any], settings: Settings) -> bool:
    seconds = row.get("waiting_seconds")
    return isinstance(seconds, (int, float)) and seconds >= settings.blocked_expire_hours * 3600


def blocked_table(rows: list[dict[str, Any]], settings: Settings) -> str:
    for r in rows:
        r["tries"] = f"{r['attempts']}/{r['max_attempts']}"
        r["waiting"] = waited(r.get("waiting_seconds"))
        r["expired"] = "expired" if expired(r, settings) else "-"
        r["question"] = question.short(r, 60)
    return table(rows, ["id", "queue", "tries", "waiting", "expired", "question"])


def answer(q: Queue, job: dict[str, Any], text: str, by: str = "operator") -> int:
    """Answer ``job`` (a row); prints what happened. 0 answered, 1 not blocked."""
    if text == "-":
        text = sys.stdin.read()
    text = text.strip()
    if not text:
        raise BadAnswer("the answer is empty; say what the agent should do")
    if "\x00" in text:
        raise BadAnswer("the answer contains a NUL character")
    if len(text) > MAX_ANSWER_CHARS:
        raise BadAnswer(f"the answer is {len(text)} characters; at most {MAX_ANSWER_CHARS} are allowed")
    job_id = str(job["id"])
    if job["status"] != "blocked":
        print(f"job {job_id} is {job['status']}, not blocked: only a blocked job's question "
              f"can be answered", file=sys.stderr)
        return 1
    row = q.answer(job_id, text, by=by)
    if row is None:  # answered, retried or cancelled meanwhile
        print(f"job {job_id} is no longer blocked; nothing was changed", file=sys.stderr)
        return 1
    print(f"answered: job {job_id} is queued again; its next attempt ({row['attempts'] + 1} of "
          f"{job['max_attempts']}) goes on from its branch with the answer")
    return 0
