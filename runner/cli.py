"""The operator's command line: ``runner <command>``."""

from __future__ import annotations

import argparse
import errno
import json
import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from runner.errors import DatabaseUnavailable, InvalidJob, RunnerError, SettingsError
from runner import dburl
from runner.cliparser import build_parser
from runner.tables import fmt as _fmt, table

if TYPE_CHECKING:  # imported where used: `runner logs` needs neither (runner/lightsettings.py)
    from runner.lightsettings import LogSettings
    from runner.queue import Queue
    from runner.settings import Settings

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


# Commands that read files first: they work without DATABASE_URL (and with the database down).
_DATABASE_OPTIONAL = {"health", "logs", "schema", "validate"}


# The CLI's exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1        # the command could not do it (no such job, nothing to cancel, bad settings)
EXIT_USAGE = 2         # the command line is wrong (argparse's own code)
EXIT_DATABASE = 3      # the database cannot be reached, does not exist, or refused the login


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raw_url = _raw_database_url()
    try:
        settings = _settings(args.command)
        if settings.has_database:
            dburl.check(settings.database_url.get_secret_value())
    except SettingsError as exc:
        print(dburl.scrub(f"runner: {exc}", raw_url), file=sys.stderr)
        return EXIT_FAILED
    url = settings.database_url.get_secret_value()
    try:
        return COMMANDS[args.command](args, settings)
    except DatabaseUnavailable as exc:
        print(dburl.scrub(f"runner {args.command}: {exc}", url), file=sys.stderr)
        return EXIT_DATABASE
    except InvalidJob as exc:  # the job on the command line is wrong
        print(dburl.scrub(f"runner {args.command}: {exc}", url), file=sys.stderr)
        return EXIT_USAGE
    except RunnerError as exc:
        print(dburl.scrub(f"runner {args.command}: {exc}", url), file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        sentence = _database_problem(exc, url)
        if sentence is None:
            raise
        print(dburl.scrub(f"runner {args.command}: {sentence}", url), file=sys.stderr)
        return EXIT_DATABASE


def _settings(command: str) -> Settings | LogSettings:
    if command == "logs":  # reads a file: no pydantic, no database layers (lightsettings.py)
        from runner.lightsettings import load_log_settings
        return load_log_settings()
    from runner.settings import load_settings
    return load_settings(database_optional=command in _DATABASE_OPTIONAL)


def _raw_database_url() -> str:
    import os
    return os.environ.get("DATABASE_URL") or os.environ.get("RUNNER_DATABASE_URL") or ""


def _database_problem(exc: BaseException, url: str) -> str | None:
    """One sentence for a database that cannot be used, or None when ``exc`` is not that."""
    import psycopg
    import sqlalchemy.exc
    import tenacity

    while isinstance(exc, tenacity.RetryError) and exc.last_attempt.exception() is not None:
        exc = exc.last_attempt.exception()
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, RunnerError) or not isinstance(exc, (psycopg.Error, sqlalchemy.exc.SQLAlchemyError)):
        return None
    where = dburl.describe(url)
    text = " ".join(str(exc).split()) or type(exc).__name__
    lower = str(exc).lower()
    if "does not exist" in lower and "database" in lower:
        return f"the database {where} does not exist; create it (createdb) or fix DATABASE_URL"
    if "password authentication failed" in lower or "no password supplied" in lower:
        return f"the database {where} refused the login ({text}); fix the user or password in DATABASE_URL"
    if isinstance(exc, psycopg.ProgrammingError) and ("connection info" in lower or "invalid dsn" in lower):
        return f"DATABASE_URL cannot be read ({text}); it must look like postgresql://user:password@host:5432/dbname"
    if "relation" in lower and "does not exist" in lower:
        return f"the database {where} has no runner schema yet; run `runner migrate` first"
    if isinstance(exc, psycopg.OperationalError) or "connection" in lower:
        return (f"cannot connect to the database {where} ({text}); check that PostgreSQL runs there "
                "and that DATABASE_URL names it")
    return f"the database {where} failed: {text}"


def _queue(settings: Settings) -> Queue:
    from runner.queue import Queue
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
    from runner.migrate import current_revision, upgrade
    before = current_revision(settings.dsn)
    upgrade(settings.dsn)
    after = current_revision(settings.dsn)
    if before is None:
        print(f"created the database schema (revision {after})")
    elif before != after:
        print(f"upgraded the database schema from revision {before} to {after}")
    else:
        print(f"database schema is up to date (revision {after})")
    return 0


@command("enqueue")
def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from runner import client
    config = _json_object(args.config, "--config")
    payload = _json_object(args.payload, "--payload")
    # Checked before connecting: a wrong config is said even with the database down.
    client.check(prompt=args.prompt, config=config, default_agent=settings.default_agent)
    with _queue(settings) as q:
        job = client.enqueue(
            q.conn, prompt=args.prompt, queue=args.queue, kind=args.kind, priority=args.priority,
            max_attempts=args.max_attempts, repo_url=args.repo_url, base_ref=args.base_ref,
            branch=args.branch, config=config, payload=payload,
            dedupe_key=args.dedupe_key, concurrency_key=args.concurrency_key,
            concurrency_limit=args.concurrency_limit, depends_on=args.depends_on,
            default_agent=settings.default_agent)
    if not job.created:
        print(f"a job with dedupe key {args.dedupe_key!r} is already queued or running; "
              f"nothing was enqueued", file=sys.stderr)
    print(job.id)
    return 0


def _running_for(seconds: Any) -> str | None:
    """1h02m, 4m05s, 12s — how long a job has been running."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return None
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@command("schema")
def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from runner.jobconfig import schema_text
    sys.stdout.write(schema_text())
    return 0


@command("validate")
def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from runner import jobconfig
    text = args.config
    if text == "-" or text.startswith("@"):
        try:
            text = sys.stdin.read() if text == "-" else open(text[1:]).read()
        except OSError as exc:
            raise RunnerError(f"cannot read {args.config[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        print(f"runner validate: the config is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        jobconfig.parse(value, settings.default_agent)
    except RunnerError as exc:
        print(f"runner validate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print("the config is valid")
    return EXIT_OK


def _json_value(value: Any) -> str:
    # ISO 8601 (2026-12-02T04:28:24.900000+00:00) for timestamps; str() for uuids and the rest.
    return value.isoformat() if isinstance(value, datetime) else str(value)


@command("jobs")
def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    if args.watch:
        from runner.watch import watch_jobs
        return watch_jobs(settings, status=args.status, queue=args.queue, limit=args.limit)
    if args.status == "blocked":  # with each question and how long it has waited
        from runner.answer import blocked_table
        with _queue(settings) as q:
            print(blocked_table(q.blocked(queue=args.queue, limit=args.limit), settings))
        return 0
    with _queue(settings) as q:
        rows = q.list(status=args.status, queue=args.queue, limit=args.limit)
        pauses = q.pauses()
    for r in rows:
        r["tries"] = f"{r['attempts']}/{r['max_attempts']}"
    print(table(rows, ["id", "queue", "status", "priority", "tries", "claimed_by", "updated_at", "error"]))
    _print_pauses(pauses)
    return 0


def _print_pauses(pauses: list[dict[str, Any]]) -> None:
    for p in pauses:
        until = f"until {_fmt(p['until'])}" if p["until"] else "until resumed"
        why = f": {p['reason']}" if p["reason"] else ""
        scope = f" for agent {p['agent']!r}" if p.get("agent") else ""
        print(f"queue {p['queue']!r} is paused{scope} {until} (by {p['paused_by']}){why}")


@command("pause")
def _pause(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta, timezone
    until = (datetime.now(timezone.utc) + timedelta(seconds=args.duration)
             if args.duration else None)
    with _queue(settings) as q:
        q.pause(args.queue, until, args.reason, by=f"cli:{settings.worker_id}")
        pauses = q.pauses()
    _print_pauses([p for p in pauses if p["queue"] == args.queue])
    return 0


@command("resume")
def _resume(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        if not q.resume(args.queue):
            raise RunnerError(f"queue {args.queue!r} is not paused")
    print(f"queue {args.queue!r} resumed")
    return 0


@command("show")
def _show(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        job = _get(q, args.id)
        events = q.events(job["id"])
        deliveries = q.webhook_deliveries(job["id"])
    job.pop("claim_token", None)
    if args.json:
        print(json.dumps({**job, "events": events, "webhook_deliveries": deliveries},
                         default=_json_value, indent=2, sort_keys=True))
        return 0
    for key in ("id", "status", "queue", "kind", "priority", "attempts", "max_attempts",
                "repo_url", "branch", "base_ref", "claimed_by", "created_at", "started_at",
                "finished_at", "worktree_path", "error"):
        print(f"{key:>14}: {_fmt(job.get(key))}")
    print(f"{'config':>14}: {json.dumps(job['config'], sort_keys=True)}")
    print(f"{'result':>14}: {json.dumps(job['result'], sort_keys=True, default=str)}")
    for extra in ("progress", "answer"):
        if job.get(extra):
            print(f"{extra:>14}: {json.dumps(job[extra], sort_keys=True, default=str)}")
    result = job["result"] if isinstance(job["result"], dict) else {}
    for warning in result.get("warnings") or []:
        print(f"{'warning':>14}: {warning}")
    print(f"{'prompt':>14}: {job['prompt'][:500]}")
    print("\nevents:")
    print(table([{**e, "detail": json.dumps(e["detail"], sort_keys=True, default=str)} for e in events],
                ["at", "event", "worker_id", "detail"]))
    if deliveries:
        print("\nwebhook deliveries:")
        print(table(deliveries, ["id", "event", "attempts", "delivered_at", "last_status",
                                 "next_attempt_at", "last_error"]))
    return 0


def _get(q: Queue, ref: str) -> dict[str, Any]:
    """The job ``ref`` names: its id, or a prefix of the id unique among the jobs."""
    job_id = _resolve(q, ref)
    job = q.get(job_id)
    if job is None:
        raise RunnerError(f"no such job {job_id}")
    return job


def _resolve(q: Queue, ref: str) -> str:
    ref = ref.strip().lower()
    if not ref or not _ID_PREFIX.fullmatch(ref):
        raise RunnerError(f"{ref!r} is not a job id or a prefix of one (hex digits and dashes)")
    if len(ref) == 36:
        return ref
    found = q.job_ids_by_prefix(ref)
    if not found:
        raise RunnerError(f"no such job: no job id starts with {ref!r}")
    if len(found) > 1:
        shown = ", ".join(found[:5])
        raise RunnerError(f"{ref!r} matches {len(found)}{'+' if len(found) >= 10 else ''} jobs "
                          f"({shown}); give more of the id")
    return found[0]


_ID_PREFIX = re.compile(r"[0-9a-f-]{1,36}")


@command("cancel")
def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        args.id = str(_get(q, args.id)["id"])
        status = q.request_cancel(args.id)
    if status is None:
        print(f"job {args.id} has already finished; nothing to cancel", file=sys.stderr)
        return 1
    print("cancelled" if status == "cancelled" else "cancel requested; the worker stops the agent at its next heartbeat")
    return 0


@command("retry")
def _retry(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        args.id = str(_get(q, args.id)["id"])
        if not q.retry(args.id):
            print(f"job {args.id} is not failed, cancelled or blocked; nothing to retry", file=sys.stderr)
            return 1
    print("queued again")
    return 0


@command("answer")
def _answer(args: argparse.Namespace, settings: Settings) -> int:
    from runner.answer import answer
    with _queue(settings) as q:
        return answer(q, _get(q, args.id), args.text)


@command("workers")
def _workers(args: argparse.Namespace, settings: Settings) -> int:
    with _queue(settings) as q:
        if args.prune:
            removed = q.prune_workers(args.gone_minutes * 60)
            print(f"removed {removed} worker row(s) not seen for {args.gone_minutes} minute(s)")
        rows = q.workers()
        pauses = q.pauses()
    from runner.progress import summary
    for r in rows:
        r["state"] = "gone" if r["gone"] else r["state"]
        r["running_for"] = _running_for(r.get("job_seconds"))
        r["progress"] = summary(r.get("progress"))
    print(table(rows, ["id", "host", "pid", "state", "current_job", "running_for", "progress",
                       "last_seen_at", "version"]))
    _print_pauses(pauses)
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
    from runner import health, healthserver
    if not args.serve:
        return health.check(settings)
    try:
        return healthserver.serve(settings)
    except OSError as exc:
        where = f"{settings.health_bind}:{settings.health_port}"
        if exc.errno == errno.EADDRINUSE:
            raise RunnerError(f"cannot serve on {where}: the port is already in use (another "
                              "`runner health --serve`?); stop it or set RUNNER_HEALTH_PORT") from None
        raise RunnerError(f"cannot serve on {where}: {exc.strerror or exc}; "
                          "check RUNNER_HEALTH_BIND and RUNNER_HEALTH_PORT") from None


@command("logs")
def _logs(args: argparse.Namespace, settings: LogSettings) -> int:
    from runner.logview import show_logs
    return show_logs(settings, args.id, follow=args.follow, raw=args.raw)
