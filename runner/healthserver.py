"""``runner health --serve``: the health report over HTTP, and the metrics.

``GET /health`` → 200 or 503 with the report of runner/health.py as JSON; ``GET /metrics``
→ Prometheus text format (runner/metrics.py); on a threaded stdlib server.
"""

from __future__ import annotations

import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from runner.health import report
from runner.metrics import CONTENT_TYPE, render
from runner.settings import Settings

log = structlog.get_logger("runner.health")


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
