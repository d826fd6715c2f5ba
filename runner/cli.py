"""The operator's command line: ``runner <command>``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any, Callable

from runner.errors import RunnerError, SettingsError
from runner.queue import Queue
from runner.settings import Settings, load_settings

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runner", description="Run coding agents for jobs queued in PostgreSQL.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply the database migrations (safe to repeat)")

    p = sub.add_parser("enqueue", help="queue a job; prints its id last")
    p.add_argument("--prompt", required=True)
    p.add_argument("--repo", dest="repo_url")
    p.add_argument("--branch")
    p.add_argument("--base-ref")
    p.add_argument("--queue", default="default")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--kind", default="task")
    p.add_argument("--config", default="{}", help="the job's config as a JSON object")
    p.add_argument("--payload", default="{}", help="the job's payload as a JSON object")

    p = sub.add_parser("jobs", help="list jobs, newest first")
    p.add_argument("--status")
    p.add_argument("--queue")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--watch", action="store_true", help="redraw live as jobs change (Ctrl-C exits)")

    p = sub.add_parser("show", help="one job with its events")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("cancel", help="cancel a job (a running agent is stopped)")
    p.add_argument("id")
    p = sub.add_parser("retry", help="send a failed, cancelled or blocked job round again")
    p.add_argument("id")
    sub.add_parser("workers", help="the workers and when each was last seen")
    p = sub.add_parser("prune", help="delete finished jobs (and their events) older than N days")
    p.add_argument("--days", type=float, required=True)

    p = sub.add_parser("health", help="this worker's health from its state files (exit 0 healthy, 1 not)")
    p.add_argument("--serve", action="store_true",
                   help="serve GET /health and /metrics on RUNNER_HEALTH_BIND:RUNNER_HEALTH_PORT")
    p = sub.add_parser("logs", help="a job's log, readable (agent events rendered)")
    p.add_argument("id", help="the job's id, or an unambiguous prefix of it")
    p.add_argument("-f", "--follow", action="store_true",
                   help="follow the log until the job reaches a final status (Ctrl-C stops)")
    p.add_argument("--raw", action="store_true", help="the lines as written, not rendered")
    return parser


# Commands that read files first: they work without DATABASE_URL (and with the database down).
_DATABASE_OPTIONAL = {"health", "logs"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(database_optional=args.command in _DATABASE_OPTIONAL)
    except SettingsError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 1
    try:
        return COMMANDS[args.command](args, settings)
    except RunnerError as exc:
        print(f"runner {args.command}: {exc}", file=sys.stderr)
        return 1


def _queue(settings: Settings) -> Queue:
    return Queue.open(settings.dsn, f"cli:{settings.worker_id}", "cli")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RunnerError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RunnerError(f"{what} must be a JSON object")
    return value


@command("migrate")
def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from runner.migrate import upgrade
    upgrade(settings.dsn)
    print("database schema is up to date")
    return 0


@command("enqueue")
def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        job = q.enqueue(
            prompt=args.prompt, queue=args.queue, kind=args.kind, priority=args.priority,
            max_attempts=args.max_attempts, repo_url=args.repo_url, base_ref=args.base_ref,
            branch=args.branch, config=_json_object(args.config, "--config"),
            payload=_json_object(args.payload, "--payload"),
        )
    print(job["id"])
    return 0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_fmt(r.get(c)).replace("\n", " ")[:60] for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


@command("jobs")
def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    if args.watch:
        from runner.watch import watch_jobs
        return watch_jobs(settings, status=args.status, queue=args.queue, limit=args.limit)
    with _queue(settings) as q:
        rows = q.list(status=args.status, queue=args.queue, limit=args.limit)
    for r in rows:
        r["tries"] = f"{r['attempts']}/{r['max_attempts']}"
    print(table(rows, ["id", "queue", "status", "priority", "tries", "claimed_by", "updated_at", "error"]))
    return 0


@command("show")
def _show(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        job = _get(q, args.id)
        events = q.events(job["id"])
    job.pop("claim_token", None)
    if args.json:
        print(json.dumps({**job, "events": events}, default=str, indent=2, sort_keys=True))
        return 0
    for key in ("id", "status", "queue", "kind", "priority", "attempts", "max_attempts",
                "repo_url", "branch", "base_ref", "claimed_by", "created_at", "started_at",
                "finished_at", "worktree_path", "error"):
        print(f"{key:>14}: {_fmt(job.get(key))}")
    print(f"{'config':>14}: {json.dumps(job['config'], sort_keys=True)}")
    print(f"{'result':>14}: {json.dumps(job['result'], sort_keys=True, default=str)}")
    result = job["result"] if isinstance(job["result"], dict) else {}
    for warning in result.get("warnings") or []:
        print(f"{'warning':>14}: {warning}")
    print(f"{'prompt':>14}: {job['prompt'][:500]}")
    print("\nevents:")
    print(table([{**e, "detail": json.dumps(e["detail"], sort_keys=True, default=str)} for e in events],
                ["at", "event", "worker_id", "detail"]))
    return 0


def _get(q: Queue, job_id: str) -> dict[str, Any]:
    try:
        job = q.get(job_id)
    except Exception as exc:  # psycopg rejects a malformed uuid
        if "uuid" in str(exc).lower():
            raise RunnerError(f"{job_id!r} is not a job id (a UUID)") from None
        raise
    if job is None:
        raise RunnerError(f"no job {job_id}")
    return job


@command("cancel")
def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        _get(q, args.id)
        status = q.request_cancel(args.id)
    if status is None:
        print(f"job {args.id} has already finished; nothing to cancel", file=sys.stderr)
        return 1
    print("cancelled" if status == "cancelled" else "cancel requested; the worker stops the agent at its next heartbeat")
    return 0


@command("retry")
def _retry(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        _get(q, args.id)
        if not q.retry(args.id):
            print(f"job {args.id} is not failed, cancelled or blocked; nothing to retry", file=sys.stderr)
            return 1
    print("queued again")
    return 0


@command("workers")
def _workers(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        rows = q.workers()
    for r in rows:
        r["state"] = "gone" if r["gone"] else r["state"]
    print(table(rows, ["id", "host", "pid", "state", "current_job", "last_seen_at", "version"]))
    return 0


@command("prune")
def _prune(args: argparse.Namespace, settings: Settings) -> int:
    total = 0
    with _queue(settings) as q:
        while deleted := q.prune_finished(args.days):
            total += deleted
    print(f"deleted {total} finished job(s) older than {args.days:g} days")
    return 0


@command("health")
def _health(args: argparse.Namespace, settings: Settings) -> int:
    from runner import health
    return health.serve(settings) if args.serve else health.check(settings)


@command("logs")
def _logs(args: argparse.Namespace, settings: Settings) -> int:
    from runner.logview import show_logs
    return show_logs(settings, args.id, follow=args.follow, raw=args.raw)
