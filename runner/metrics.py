"""``GET /metrics``: the worker in Prometheus text exposition format (version 0.0.4).

Sources, each optional — a source that fails is reported, never fatal:

* ``state.json`` and the markers (runner/health.py): up, healthy, state, failures in a row;
* ``iterations.jsonl`` (appended by each iteration, runner/state.py): iteration durations;
* the database (when it answers): jobs per queue and status, this worker's job events,
  claim latency. ``runner_database_up 0`` when it does not.

Durations and claim latencies are computed over a sliding window (the last hour) from
rows, not counted by a long-lived process, so they are exposed as gauges with a ``stat``
label (p50, p90, p99, max, mean) rather than as histogram or summary counters, whose
``_count``/``_sum`` must never go down. Job events are read from the append-only
``job_events`` table, so they are real counters (pruning old jobs resets them, which
Prometheus treats as a counter reset).
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import structlog

from runner import health, state
from runner.clock import parse_time
from runner.schema import JOB_STATUSES
from runner.settings import Settings

log = structlog.get_logger("runner.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOW_SECONDS = 3600
_STATS = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """Metric families, each with one HELP and one TYPE line before its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{text}}} {format_value(value)}" if text
                              else f"{name} {format_value(value)}")

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "gauge", help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list (not empty)."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def stats(values: list[float]) -> list[tuple[dict[str, str], float]]:
    if not values:
        return []
    ordered = sorted(values)
    out = [({"stat": name}, quantile(ordered, q)) for name, q in _STATS]
    out.append(({"stat": "max"}, ordered[-1]))
    out.append(({"stat": "mean"}, sum(ordered) / len(ordered)))
    return out


def _state_metrics(exp: Exposition, settings: Settings) -> dict[str, Any]:
    rep = health.report(settings.state_dir, settings.health_stale_seconds)
    present = "updated_at" in rep
    stopped = rep.get("status") in ("stopped", "stopping")
    exp.gauge("runner_up", "1 when the supervisor's state.json is present and fresh and it "
              "has not stopped", int(present and not rep["stale"] and not stopped))
    exp.gauge("runner_healthy", "1 when `runner health` would exit 0", int(rep["healthy"]))
    status = rep.get("status")
    known = status in health.SUPERVISOR_STATUSES
    exp.family("runner_state", "gauge", "The supervisor's status (one-hot; unknown when unreadable)",
               [({"status": s}, int(s == status)) for s in health.SUPERVISOR_STATUSES]
               + [({"status": "unknown"}, int(not known))])
    exp.family("runner_marker", "gauge", "1 while the marker file exists in RUNNER_STATE_DIR",
               [({"marker": m}, int(m in rep["markers"])) for m in health.MARKERS])
    if rep.get("state_age_seconds") is not None:
        exp.gauge("runner_state_age_seconds", "Seconds since state.json was updated",
                  rep["state_age_seconds"])
    for key, name, help_text in (
        ("consecutive_failures", "runner_consecutive_failures", "Failed iterations in a row"),
        ("iteration", "runner_iteration", "Number of the current iteration of the supervisor"),
        ("last_exit_code", "runner_last_exit_code", "Exit code of the last iteration"),
    ):
        value = rep.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            exp.gauge(name, help_text, value)
    for key, name, help_text in (
        ("backoff_until", "runner_backoff_until_timestamp_seconds", "End of the current backoff"),
        ("usage_limit_reset_at", "runner_usage_limit_reset_timestamp_seconds",
         "When the agent's usage limit resets"),
    ):
        when = parse_time(rep.get(key))
        if when is not None:
            exp.gauge(name, help_text, when.timestamp())
    return rep


def _iteration_metrics(exp: Exposition, settings: Settings, now: datetime) -> None:
    since = now - timedelta(seconds=WINDOW_SECONDS)
    rows = [r for r in state.read_iterations(settings.state_dir)
            if (parse_time(r.get("at")) or since) >= since]
    exp.family("runner_iteration_duration_seconds", "gauge",
               "Duration of this worker's iterations in the last hour (iterations.jsonl)",
               stats([float(r["seconds"]) for r in rows]))
    by_code: dict[str, int] = {}
    for r in rows:
        by_code[str(r.get("exit_code"))] = by_code.get(str(r.get("exit_code")), 0) + 1
    exp.family("runner_iterations_recent", "gauge", "Iterations in the last hour, by exit code",
               [({"exit_code": code}, n) for code, n in sorted(by_code.items())])


def _database_metrics(exp: Exposition, settings: Settings, worker_id: str | None) -> None:
    from runner.dbconn import connect
    from runner.queue import Queue

    error = None
    counts: list[dict[str, Any]] = []
    events: dict[str, int] = {}
    latencies: list[float] = []
    pending: dict[str, Any] | None = None
    pauses: list[dict[str, Any]] = []
    if not settings.has_database:
        error = "DATABASE_URL is not set"
    else:
        try:
            conn = connect(settings.dsn, "metrics", worker_id or "", connect_timeout=3,
                           options="-c statement_timeout=5000")
            with Queue(conn, worker_id or "metrics") as q:
                counts = q.job_counts()
                if worker_id:
                    events = q.worker_event_counts(worker_id)
                latencies = q.claim_latencies(WINDOW_SECONDS)
                if settings.webhook_url:
                    pending = q.webhook_pending()
                pauses = q.pauses()
        except Exception as exc:  # DatabaseUnavailable, a timeout, a missing table: all "down"
            error = " ".join(str(exc).split()) or type(exc).__name__
    exp.gauge("runner_database_up", "1 when the database answered this scrape", int(error is None))
    if error is not None:
        log.warning("metrics_database_unavailable", error=error)
        return
    per_queue: dict[str, dict[str, int]] = {}
    for row in counts:
        per_queue.setdefault(row["queue"], {s: 0 for s in JOB_STATUSES})[row["status"]] = row["n"]
    exp.family("runner_jobs", "gauge", "Jobs in the database, by queue and status",
               [({"queue": q, "status": s}, n)
                for q, by_status in sorted(per_queue.items()) for s, n in by_status.items()])
    exp.family("runner_queue_paused", "gauge",
               "1 for each queue paused now: by an operator (runner pause, agent \"\"), or for "
               "one agent by the model API's overloads (runner/guard.py); no worker claims from it",
               [({"queue": p["queue"], "agent": p["agent"] or ""}, 1) for p in pauses])
    if worker_id:
        exp.family("runner_worker_job_events_total", "counter",
                   "Job events written by this worker (claimed, succeeded, failed, rolled_back …)",
                   [({"worker_id": worker_id, "event": e}, n) for e, n in sorted(events.items())])
    exp.family("runner_claim_latency_seconds", "gauge",
               "Seconds from due (created_at or run_after) to claimed, jobs claimed in the last hour",
               stats(latencies))
    exp.gauge("runner_claim_latency_jobs", "Jobs claimed in the last hour (claim latency sample size)",
              len(latencies))
    if pending is not None:  # only where a webhook is configured
        exp.gauge("runner_webhook_pending", "Webhook deliveries not yet made (the app down?)",
                  int(pending["n"]))
        exp.gauge("runner_webhook_oldest_pending_seconds",
                  "Age of the oldest webhook delivery not yet made", float(pending["oldest_seconds"]))


def render(settings: Settings, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    exp = Exposition()
    rep = _state_metrics(exp, settings)
    # This worker's id: the supervisor's (state.json), else an explicit RUNNER_WORKER_ID.
    worker_id = rep.get("worker_id") or os.environ.get("RUNNER_WORKER_ID") or None
    _iteration_metrics(exp, settings, now)
    _database_metrics(exp, settings, str(worker_id) if worker_id else None)
    return exp.text()
