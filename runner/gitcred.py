"""git's credential helper for the runner's own git processes (``git credential`` protocol).

Run by git as ``python -I -S runner/gitcred.py get`` (runner.gitcmd puts it in ``-c
credential.helper=…`` of the commands that may authenticate): it answers with the token
from ``RUNNER_GIT_TOKEN`` in its environment — which only those git processes have — and
only when git asks for https (or http to a loopback host, where the operator allowed that)
to one of ``RUNNER_GIT_TOKEN_HOSTS`` (the runner fills it from RUNNER_GIT_TOKEN_HOSTS or
else RUNNER_ALLOWED_REPO_HOSTS). A redirect, submodule or ``insteadOf`` that leads git
anywhere else is answered with nothing, so git goes on without the token.

Standard library only, imported by nothing: it starts in milliseconds, for each question.
"""

from __future__ import annotations

import os
import sys

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def host_allowed(host: str, allowed: list[str]) -> bool:
    """``host`` (git's ``host=`` value, perhaps ``name:port``) is one of ``allowed``: an entry
    ``name`` matches that name on any port, ``name:port`` that port only, ``*.domain`` any
    name under the domain. An empty list allows every host."""
    if not allowed:
        return True
    host = host.lower()
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for entry in (e.strip().lower() for e in allowed):
        if not entry:
            continue
        if entry.startswith("*."):
            if name.endswith(entry[1:]) and len(name) > len(entry) - 1:
                return True
        elif entry == host or entry == name:
            return True
    return False


def answer(request: dict[str, str], env: dict[str, str]) -> str:
    """What to print for git's question ``request`` (its key=value lines), given ``env``."""
    token = env.get("RUNNER_GIT_TOKEN")
    if not token:
        return ""
    protocol, host = request.get("protocol", ""), request.get("host", "")
    name = host.lower().rsplit(":", 1)[0] if host.count(":") == 1 else host.lower()
    http_ok = env.get("RUNNER_GIT_TOKEN_HTTP_LOOPBACK") == "1" and name in LOOPBACK
    if protocol != "https" and not (protocol == "http" and http_ok):
        return ""
    hosts = [h for h in env.get("RUNNER_GIT_TOKEN_HOSTS", "").split(",") if h.strip()]
    if not host or not host_allowed(host, hosts):
        return ""
    user = env.get("RUNNER_GIT_USERNAME") or "x-access-token"
    return f"username={user}\npassword={token}\n"


def main(argv: list[str]) -> int:
    if argv[1:2] != ["get"]:
        return 0  # store / erase: nothing is kept
    request: dict[str, str] = {}
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            break
        key, _, value = line.partition("=")
        request[key] = value
    sys.stdout.write(answer(request, dict(os.environ)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
