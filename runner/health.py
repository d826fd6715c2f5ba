"""``runner health``: is this worker alive and able to work? Read from files only.

The supervisor (bin/run-agent.sh) keeps ``$RUNNER_STATE_DIR/state.json`` fresh (at least
every 30 s) and writes the ``UNHEALTHY`` / ``TOKEN_EXPIRED`` markers. The report is the
state file's fields plus computed ones: ``healthy``, ``reasons``, ``markers`` (name →
text), ``stale`` and ``state_age_seconds``. Unhealthy when a marker exists, when
state.json is missing or unreadable, or when its ``updated_at`` is older than
RUNNER_HEALTH_STALE_SECONDS. The database is not consulted: a health check must answer
when the database is down (that is the supervisor's business, and UNHEALTHY says it).

``runner health --serve``: the same as HTTP (``GET /health`` → 200 or 503 JSON) plus
``GET /metrics`` (Prometheus text format, runner/metrics.py), on a threaded stdlib server.
"""

from __future__ import annotations

import json
import signal
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from runner.settings import Settings

log = structlog.get_logger("runner.health")

STATE_FILE = "state.json"
MARKERS = ("UNHEALTHY", "TOKEN_EXPIRED")
SUPERVISOR_STATUSES = ("starting", "running", "backoff", "token_expired", "usage_limited",
                       "stopping", "stopped")
_MARKER_MAX_CHARS = 4000


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp ('Z' or offset) or Unix seconds, as an aware datetime."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), timezone.utc)
        parsed = datetime.fromisoformat(str(value).strip())
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def read_markers(state_dir: Path) -> dict[str, str]:
    markers = {}
    for name in MARKERS:
        path = state_dir / name
        if path.exists():
            try:
                markers[name] = path.read_text(errors="replace").strip()[:_MARKER_MAX_CHARS]
            except OSError as exc:
                markers[name] = f"(unreadable: {exc.strerror})"
    return markers


def report(state_dir: Path, stale_seconds: float, now: datetime | None = None) -> dict[str, Any]:
    """The health report: state.json's fields plus healthy, reasons, markers, stale."""
    now = now or datetime.now(timezone.utc)
    path = state_dir / STATE_FILE
    reasons: list[str] = []
    state: dict[str, Any] = {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            state = loaded
        else:
            reasons.append(f"{path} does not hold a JSON object")
    except FileNotFoundError:
        reasons.append(f"{path} is missing: the supervisor has not reported (yet)")
    except (OSError, ValueError) as exc:
        reasons.append(f"{path} cannot be read: {exc}")

    age = None
    stale = True
    if state:
        updated = parse_time(state.get("updated_at"))
        if updated is None:
            reasons.append(f"state.json has no readable updated_at ({state.get('updated_at')!r})")
        else:
            age = round((now - updated).total_seconds(), 1)
            stale = age > stale_seconds
            if stale:
                reasons.append(f"state.json was last updated {age:.0f} s ago (more than "
                               f"{stale_seconds:g} s): the supervisor is stuck or gone")

    markers = read_markers(state_dir)
    for name, text in markers.items():
        reasons.append(f"{name}: {text}" if text else name)
    return {**state, "healthy": not reasons, "reasons": reasons, "markers": markers,
            "stale": stale, "state_age_seconds": age, "state_dir": str(state_dir)}


def check(settings: Settings) -> int:
    """``runner health``: print the report; 0 when healthy, 1 otherwise."""
    rep = report(settings.state_dir, settings.health_stale_seconds)
    print(json.dumps(rep, indent=2, sort_keys=True, default=str))
    return 0 if rep["healthy"] else 1


# -- the HTTP server --------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "runner-health"
    settings: Settings  # set on the subclass made by make_server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        try:
            if path == "/health":
                rep = report(self.settings.state_dir, self.settings.health_stale_seconds)
                body = json.dumps(rep, indent=2, sort_keys=True, default=str) + "\n"
                self._send(200 if rep["healthy"] else 503, "application/json", body)
            elif path == "/metrics":
                from runner.metrics import CONTENT_TYPE, render
                self._send(200, CONTENT_TYPE, render(self.settings))
            else:
                self._send(404, "application/json",
                           json.dumps({"error": "not found", "paths": ["/health", "/metrics"]}) + "\n")
        except Exception as exc:  # a bug in one request must not stop the server
            log.exception("health_request_failed", path=path)
            self._send(500, "application/json", json.dumps({"error": str(exc)}) + "\n")

    def _send(self, code: int, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a scrape every 15 s is not news; errors are logged above


def make_server(settings: Settings, port: int | None = None) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"settings": settings})
    server = ThreadingHTTPServer((settings.health_bind, settings.health_port if port is None else port),
                                 handler)
    server.daemon_threads = True
    return server


def serve(settings: Settings) -> int:
    """``runner health --serve``: until SIGTERM/SIGINT."""
    if settings.health_port == 0:
        print("runner health: RUNNER_HEALTH_PORT=0, the health server is off")
        return 0
    server = make_server(settings)
    host, port = server.server_address[:2]
    print(f"runner health: serving http://{host}:{port}/health and /metrics", flush=True)

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0
