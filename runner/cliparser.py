"""The command line's grammar: ``runner <command> [options]`` (argparse only, so that
``runner logs`` parses its arguments without importing the database layers)."""

from __future__ import annotations

import argparse
import math
import re
from typing import Callable

from runner.contract import JOB_STATUSES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runner", description="Run coding agents for jobs queued in PostgreSQL.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply the database migrations (safe to repeat)")

    p = sub.add_parser("enqueue", help="queue a job; prints its id last")
    p.add_argument("--prompt", required=True, help="what the agent is asked to do (required)")
    p.add_argument("--repo", dest="repo_url",
                   help="the git repository to work in (https://, ssh:// or a local path); "
                        "default: none, the agent runs in an empty directory")
    p.add_argument("--branch", help="the branch the job's commits go on; default: runner/<job id>")
    p.add_argument("--base-ref", help="the ref the job starts from; default: the repository's default branch")
    p.add_argument("--queue", default="default",
                   help="the queue a worker takes it from (RUNNER_QUEUES); default: %(default)s")
    p.add_argument("--priority", type=_int_between(-2**31, 2**31 - 1), default=0,
                   help="higher runs first (then the oldest first); any integer; default: %(default)s")
    p.add_argument("--max-attempts", type=_int_between(1, 1000), default=3,
                   help="how many times the agent may run before the job ends failed (1-1000); "
                        "default: %(default)s")
    p.add_argument("--kind", default="task",
                   help="a free label for the web app (e.g. task, review); default: %(default)s")
    p.add_argument("--config", default="{}", help="the job's config as a JSON object")
    p.add_argument("--payload", default="{}", help="the job's payload as a JSON object")
    p.add_argument("--dedupe-key", help="enqueue nothing when a queued or running job has this "
                                        "key; its id is printed instead")
    p.add_argument("--concurrency-key", help="jobs of one key run one after another (up to "
                                             "--concurrency-limit at once), in enqueue order; "
                                             "default: repository#branch when --branch is given")
    p.add_argument("--concurrency-limit", type=_int_between(1, 10000),
                   help="how many jobs of the key may run at once (1-10000); default: 1, or "
                        "RUNNER_CONCURRENCY_LIMITS")
    p.add_argument("--depends-on", action="append", metavar="JOB_ID", default=None,
                   help="run only after this job succeeded (repeatable); if it fails, this job fails")

    sub.add_parser("schema", help="print the JSON Schema of a job's config")
    p = sub.add_parser("validate", help="check a job's config without a database "
                                        "(exit 0 valid, 2 invalid with the reason)")
    p.add_argument("--config", required=True,
                   help="the config as a JSON object, or @FILE to read it from a file (- for stdin)")

    p = sub.add_parser("jobs", help="list jobs, newest first")
    p.add_argument("--status", choices=JOB_STATUSES, metavar="STATUS",
                   help="only jobs in this status: " + ", ".join(JOB_STATUSES) + "; default: all")
    p.add_argument("--queue", help="only jobs of this queue; default: all")
    p.add_argument("--limit", type=_int_between(1, 100_000), default=50,
                   help="at most this many rows (1-100000); default: %(default)s")
    p.add_argument("--watch", action="store_true", help="redraw live as jobs change (Ctrl-C exits)")

    p = sub.add_parser("show", help="one job with its events")
    p.add_argument("id")
    p.add_argument("--json", action="store_true",
                   help="the row and its events as JSON (timestamps in ISO 8601) instead of text")

    p = sub.add_parser("cancel", help="cancel a job (a running agent is stopped)")
    p.add_argument("id")
    p = sub.add_parser("retry", help="send a failed, cancelled or blocked job round again")
    p.add_argument("id")
    p = sub.add_parser("answer", help="answer a blocked job's question; it goes on from there")
    p.add_argument("id")
    p.add_argument("text", help="the answer (- reads it from stdin)")
    p = sub.add_parser("pause", help="stop every worker claiming from a queue (running jobs go on)")
    p.add_argument("queue")
    p.add_argument("--for", dest="duration", type=_duration,
                   help="for how long, e.g. 90s, 30m, 2h, 1d; default: until `runner resume`")
    p.add_argument("--reason", default="", help="shown in `runner jobs` and `runner workers`")
    p = sub.add_parser("resume", help="let workers claim from a paused queue again")
    p.add_argument("queue")
    p = sub.add_parser("workers", help="the workers and when each was last seen")
    p.add_argument("--prune", action="store_true",
                   help="first delete the rows of workers gone (not seen) for --gone-minutes")
    p.add_argument("--gone-minutes", type=_int_between(1, 10_000_000), default=10,
                   help="with --prune: minutes since a worker was last seen (1 or more); default: %(default)s")
    p = sub.add_parser("prune", help="delete finished jobs (and their events) older than N days")
    p.add_argument("--days", type=_days, required=True,
                   help="age in days since the job finished, a number from 0 to 36500 (0.5 = 12 hours); required")

    p = sub.add_parser("health", help="this worker's health from its state files (exit 0 healthy, 1 not)")
    p.add_argument("--serve", action="store_true",
                   help="serve GET /health and /metrics on RUNNER_HEALTH_BIND:RUNNER_HEALTH_PORT")
    p = sub.add_parser("logs", help="a job's log, readable (agent events rendered)")
    p.add_argument("id", help="the job's id, or an unambiguous prefix of it")
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow the log until the job reaches a final status (Ctrl-C stops)")
    p.add_argument("--raw", action="store_true", help="the lines as written, not rendered")
    return parser


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; use {low} to {high}")
        return value
    parse.__name__ = "number"
    return parse


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    seconds = float(m[1]) * _UNITS[m[2] or "s"] if m else 0
    if not m or not 0 < seconds <= 366 * 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 90s, 30m, 2h or 1d (at most a year)")
    return seconds


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not math.isfinite(value) or not 0 <= value <= 36500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 0 to 36500")
    return value
