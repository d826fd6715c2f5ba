"""A git smart-HTTP server on 127.0.0.1 for tests: ``git http-backend`` behind a small
threaded http.server, optionally requiring Basic auth with one token as the password.

It counts requests per service (``upload-pack`` = clone/fetch, ``receive-pack`` = push)
and every Authorization header it saw, so tests can tell a clone from a fetch.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class GitHttpServer:
    def __init__(self, root: Path, token: str | None = None, push_only: bool = False) -> None:
        self.root, self.token, self.push_only = root, token, push_only
        self.requests: Counter[str] = Counter()
        self.denied = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._cgi()

            def do_POST(self) -> None:
                self._cgi()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _cgi(self) -> None:
                parts = urlsplit(self.path)
                service = "receive-pack" if "receive-pack" in self.path else "upload-pack"
                user = None
                if server.token is not None and (service == "receive-pack" or not server.push_only):
                    auth = self.headers.get("Authorization", "")
                    ok = False
                    if auth.startswith("Basic "):
                        name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                        ok, user = password == server.token, name
                    if not ok:
                        server.denied += 1
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="git"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = self._body() if self.command == "POST" else b""
                server.requests[f"{self.command} {service}"] += 1
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server.root), "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command, "PATH_INFO": parts.path,
                    "QUERY_STRING": parts.query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                }
                if user:
                    env["REMOTE_USER"] = user
                proc = subprocess.run(["git", "http-backend"], input=body, env=env,
                                      capture_output=True)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                status, headers = 200, []
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> "GitHttpServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def bare_copy(source: Path, dest: Path) -> Path:
    """A bare repository at ``dest`` holding ``source``'s branches (the served remote)."""
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "config", "http.receivepack", "true"], check=True)
    return dest
