"""``python -m runner.preclone URL...``: fill the mirror cache before the first job.

The container's entrypoint runs this with RUNNER_PRECLONE_REPOS. Each URL gets the check
a job's ``repo_url`` gets, then the same mirror a job would use (runner.repo_cache, under
its lock). One line per URL on stderr: ``ok (cloned)`` / ``ok (fetched)`` or ``FAILED``
with the reason; a URL is shown without its user info. A failure is not fatal — jobs
clone on demand — so the exit status is 0 unless the runner itself cannot start.
"""

from __future__ import annotations

import logging
import re
import sys
import time

import structlog

from runner.errors import RunnerError
from runner.inputs import check_repo_url
from runner.repo_cache import ensure_mirror, locked, mirror_dir
from runner.settings import Settings, load_settings

_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^@/]*@")


def shown(url: str) -> str:
    """The URL without user info (a token may be written there)."""
    return _USERINFO.sub(r"\1***@", url)


def _say(text: str) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"{when} entrypoint: pre-clone{text}"


def _line(_logger, _method, event: dict) -> str:
    text = event.pop("event", "")
    event.pop("level", None)
    return " ".join([_say(f": {text}"), *(f"{k}={v}" for k, v in event.items())])


def preclone(url: str, settings: Settings) -> str:
    """``cloned`` or ``fetched``; raises with the reason when it cannot be done."""
    check_repo_url(url, settings)
    mirror = mirror_dir(settings.cache_dir, url)
    with locked(mirror, settings):
        return ensure_mirror(url, mirror, settings)


def main(urls: list[str]) -> int:
    # The library's retry warnings become entrypoint lines; its info lines stay quiet.
    structlog.configure(processors=[_line], logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not urls:
        print(_say(": nothing to do (RUNNER_PRECLONE_REPOS empty)"), file=sys.stderr)
        return 0
    try:
        settings = load_settings()
    except RunnerError as exc:
        print(_say(f": FAILED: {' '.join(str(exc).split())}"), file=sys.stderr)
        return 1
    for url in urls:
        try:
            result = f"ok ({preclone(url, settings)})"
        except Exception as exc:  # noqa: BLE001 - reported; the job will clone on demand
            reason = " ".join(str(exc).split())[:400] or type(exc).__name__
            result = f"FAILED: {reason}; continuing, jobs will clone it on demand"
        print(_say(f" {shown(url)}: {result}"), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main([u for arg in sys.argv[1:] for u in arg.replace(",", " ").split()]))
