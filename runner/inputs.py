"""Job values that reach git or the filesystem, checked so that they cannot hurt.

* ``repo_url``: https://, ssh:// or scp-like ``user@host:path`` on an allowed host;
  file:// only with RUNNER_ALLOW_FILE_REPOS; plain http:// only to loopback with
  RUNNER_ALLOW_HTTP_LOOPBACK; never a ``transport::`` form, an option, credentials,
  control characters or non-ASCII.
* ``branch`` / ``base_ref``: a conservative character set, then ``git check-ref-format
  --branch``'s rules (checked in Python, tested against git); they reach git only after ``--`` / ``--end-of-options`` or as option values.
* paths: the job directory is ``<job root>/<uuid>``, resolved and checked to be inside the
  job root; a checked-out repository may not hold a symlink that leads out of its worktree.

Messages never echo a password: a URL is shown without its user-info part.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from runner.errors import InvalidRef, InvalidRepository, JobInputError
from runner.settings import Settings

MAX_URL = 1000
MAX_REF = 200
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
                   r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_SCP = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]{1,64})@)?(?P<host>[^/:@]+):(?P<path>.*)$")
_REF_CHARS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]*$")


class UnsafePath(JobInputError):
    """A path derived from the job would leave the job root."""


def display_url(url: str) -> str:
    """The URL for messages: without user info, shortened, repr-quoted."""
    shown = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", str(url))
    return repr(shown[:100] + ("…" if len(shown) > 100 else ""))


def check_repo_url(url: Any, settings: Settings) -> str:
    """Return the URL's host ('' for file://) or raise InvalidRepository with a reason."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRepository("repo_url is empty")
    if len(url) > MAX_URL:
        raise InvalidRepository(f"repo_url is too long ({len(url)} characters; at most {MAX_URL})")
    if url.startswith("-"):
        raise InvalidRepository("repo_url must not start with '-' (git would read it as an option)")
    head = url.split("/", 1)[0]
    if "::" in head or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", url):
        raise InvalidRepository("repo_url uses a git remote-helper 'transport::address' form "
                                "(such as ext:: or fd::), which is never allowed")
    if any(not 0x21 <= ord(c) <= 0x7E for c in url):
        raise InvalidRepository("repo_url must be printable ASCII without spaces or control "
                                "characters (percent-encode anything else)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in unquote(url)):
        raise InvalidRepository("repo_url contains percent-encoded control characters")
    if "://" not in url:
        return _check_scp(url, settings)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRepository(f"repo_url is not a valid URL: {display_url(url)}") from None
    scheme = parts.scheme.lower()
    if parts.password is not None or (parts.username is not None and scheme != "ssh"):
        raise InvalidRepository("repo_url must not contain credentials (user:password@ or a "
                                "token before '@'); the runner authenticates with RUNNER_GIT_TOKEN")
    host = (parts.hostname or "").lower()
    if scheme == "file":
        if not settings.allow_file_repos:
            raise InvalidRepository("file:// repositories are not allowed "
                                    "(the operator can set RUNNER_ALLOW_FILE_REPOS=1)")
        if host not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidRepository(f"a file:// repo_url must be file:///absolute/path: {display_url(url)}")
        return ""
    if scheme == "http":
        if not (settings.allow_http_loopback and host in LOOPBACK):
            raise InvalidRepository("plain http:// is not allowed; use https:// or ssh://")
    elif scheme not in ("https", "ssh"):
        raise InvalidRepository(f"repo_url must be an https:// or ssh:// URL (or user@host:path), "
                                f"not {scheme}://")
    if port is not None and not 1 <= port <= 65535:
        raise InvalidRepository("repo_url has an invalid port")
    _check_host(host, settings)
    if not parts.path or parts.path == "/" or parts.path.startswith("/-"):
        raise InvalidRepository(f"repo_url has no usable repository path: {display_url(url)}")
    return host


def _check_scp(url: str, settings: Settings) -> str:
    m = _SCP.match(url)
    if not m:
        raise InvalidRepository(f"repo_url must be an https:// or ssh:// URL or user@host:path, "
                                f"got {display_url(url)}")
    host, path = m["host"].lower(), m["path"]
    if not path or path.startswith("-"):
        raise InvalidRepository("repo_url (user@host:path) has an empty path or one starting with '-'")
    _check_host(host, settings)
    return host


def _check_host(host: str, settings: Settings) -> None:
    if not host:
        raise InvalidRepository("repo_url has no host")
    if host not in LOOPBACK and not _HOST.match(host) and not re.match(r"^[0-9.]+$", host):
        raise InvalidRepository(f"repo_url has an invalid host name {host[:80]!r}")
    allowed = {h.lower() for h in settings.allowed_repo_hosts}
    if host not in allowed:
        raise InvalidRepository(f"repository host {host[:80]!r} is not in RUNNER_ALLOWED_REPO_HOSTS "
                                f"({', '.join(sorted(allowed)) or 'empty'})")


def check_ref(name: Any, what: str, settings: Settings | None = None) -> str:
    """A branch or base ref name that git accepts and that cannot be read as an option."""
    if not isinstance(name, str) or not name:
        raise InvalidRef(f"{what} must be a non-empty string")
    if len(name) > MAX_REF:
        raise InvalidRef(f"{what} is too long ({len(name)} characters; at most {MAX_REF})")
    if not _REF_CHARS.match(name) or name == "HEAD":
        raise InvalidRef(f"{what} {name[:80]!r} is not allowed: use ASCII letters, digits and "
                         f". _ / + - (not first), and not 'HEAD'")
    if not branch_name_ok(name):
        raise InvalidRef(f"{what} {name!r} is not a valid branch name (git check-ref-format)")
    return name


def branch_name_ok(name: str) -> bool:
    """``git check-ref-format --branch`` in Python, for names of the characters
    ``_REF_CHARS`` lets through (no space, control, ``~^:?*[\\``, ``@{``): one git process
    less before each job's agent starts. The rules left for those characters
    (``git help check-ref-format``): no component begins with '.' or ends with '.lock',
    no '..', no empty component (leading, trailing or doubled '/'), no trailing '.'.
    tests/test_inputs.py checks it against git itself over many names."""
    if not _REF_CHARS.match(name) or name == "HEAD" or ".." in name or name.endswith("."):
        return False
    return all(part and not part.startswith(".") and not part.endswith(".lock")
               for part in name.split("/"))


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (resolved, links followed) is ``root`` or below it."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    return real == real_root or real_root in real.parents


def job_dir(job_root: Path, job_id: Any) -> Path:
    """``<job root>/<uuid>``, refusing anything that is not a UUID or leaves the root."""
    try:
        name = str(uuid.UUID(str(job_id)))
    except ValueError:
        raise UnsafePath(f"job id {str(job_id)[:60]!r} is not a UUID") from None
    root = Path(os.path.realpath(job_root))
    path = root / name
    if path.parent != root:
        raise UnsafePath("the job directory would leave the job root")
    return path


def escaping_symlinks(work: Path, limit: int = 5) -> list[str]:
    """Symlinks under ``work`` whose target (fully resolved) is outside ``work``.

    os.scandir's entries carry the file type from the directory read itself, so the walk
    costs no stat per file (a 10k-file checkout: one getdents per directory); only the
    symlinks found are resolved."""
    found: list[str] = []
    real_work = Path(os.path.realpath(work))
    pending = [str(work)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    p = Path(entry.path)
                    if not inside(p, real_work):
                        found.append(f"{p.relative_to(work)} -> {os.readlink(p)[:100]}")
                        if len(found) >= limit:
                            return found
                elif entry.is_dir(follow_symlinks=False) and not (
                        entry.name == ".git" and entry.path == os.path.join(work, ".git")):
                    pending.append(entry.path)
    return found
