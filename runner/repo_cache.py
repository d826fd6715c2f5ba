"""One bare mirror per repository URL under RUNNER_CACHE_DIR, shared by every worker
on the host, and the lock that serialises everything that writes to it.

Layout::

    <cache>/<tail>-<sha256(url)[:16]>.git       bare repository (the mirror)
    <cache>/<tail>-<sha256(url)[:16]>.git.lock  flock(2) target, mtime = last use

The mirror keeps the remote's branches under ``refs/remotes/origin/*`` (tags under
``refs/tags``) and job branches under ``refs/heads/*``, so ``fetch --prune`` never
touches a job's branch. Clone, fetch, ``worktree add/remove/prune`` and push run with
the lock held; the lock is never taken twice by one process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog
from tenacity import (Retrying, retry_if_exception, stop_after_attempt,
                      wait_exponential)

from runner.errors import IterationError, RepositoryUnavailable
from runner.gitcmd import GitFailed, git
from runner.inputs import display_url
from runner.settings import Settings
from runner.workspace import remove_tree

log = structlog.get_logger("runner.repo_cache")

# Keys a mirror's config may hold; anything else was written by someone else (an agent
# shares this user's files) and is removed before git reads the mirror again.
_ALLOWED_CONFIG = re.compile(
    r"^(core\.(repositoryformatversion|filemode|bare|ignorecase|precomposeunicode|"
    r"logallrefupdates|symlinks)|remote\.origin\.(url|fetch)|"
    r"branch\..+\.(runnerjob|runnercreated)|gc\.auto|gc\.autodetach)$")


ORIGIN_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"


class LockTimeout(IterationError):
    """Another worker held the repository cache lock for too long."""


class RepositoryUnreachable(IterationError):
    """The repository's host could not be reached after retries: not the job's fault, so
    the claim is handed back (attempt refunded) and the supervisor backs off."""


def mirror_dir(cache_dir: Path, url: str) -> Path:
    """A safe, stable directory name for the URL's mirror: readable tail + hash."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/").rsplit("/", 1)[-1])[:40].strip(".-")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir / f"{tail or 'repo'}-{digest}.git"


def lock_path(mirror: Path) -> Path:
    return mirror.with_name(mirror.name + ".lock")


@contextmanager
def locked(mirror: Path, settings: Settings, *, wait: bool = True) -> Iterator[bool]:
    """Hold the mirror's inter-process lock (fcntl.flock on ``<mirror>.lock``).

    Yields True once held. With ``wait=False`` it yields False at once when another
    process holds it; otherwise it waits up to RUNNER_GIT_LOCK_TIMEOUT_SECONDS.
    """
    mirror.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(mirror)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + settings.git_lock_timeout_seconds
        waited, delay = False, 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if not waited:
                    log.info("repo_cache_lock_waiting", mirror=mirror.name)
                    waited = True
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"the cache lock {path} was held by another worker for "
                                      f"more than {settings.git_lock_timeout_seconds:.0f} s") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        os.utime(fd)  # last use, for anyone expiring old mirrors
        yield True
    finally:
        os.close(fd)  # closing releases the flock


def retrying(settings: Settings, what: str, url: str) -> Retrying:
    def before_sleep(state) -> None:  # noqa: ANN001 - tenacity's RetryCallState
        exc = state.outcome.exception()
        log.warning("git_transient_failure_retrying", what=what, repo=display_url(url),
                    attempt=state.attempt_number, error=str(exc))

    return Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, GitFailed) and e.kind == "transient"),
        stop=stop_after_attempt(settings.git_retry_attempts),
        wait=wait_exponential(multiplier=settings.git_retry_wait_seconds, max=60),
        before_sleep=before_sleep, reraise=True)


def ensure_mirror(url: str, mirror: Path, settings: Settings) -> str:
    """Clone or fetch the mirror (caller holds the lock). Returns 'cloned' or 'fetched'.

    A mirror git cannot read is removed and cloned again, once. Transient network
    failures are retried; a missing repository or rejected credentials are not.
    """
    try:
        if not _healthy(mirror, settings):
            if mirror.exists():
                log.warning("mirror_corrupt_recloning", mirror=mirror.name, reason="unreadable")
            return _clone(url, mirror, settings)
        repair_config(mirror, url)
        try:
            _fetch(url, mirror, settings)
            return "fetched"
        except GitFailed as exc:
            if exc.kind not in ("corrupt", "other"):
                raise
            log.warning("mirror_corrupt_recloning", mirror=mirror.name, reason=exc.tail())
            return _clone(url, mirror, settings)
    except GitFailed as exc:
        if exc.kind == "transient":
            raise RepositoryUnreachable(_reason(exc, url)) from exc
        raise RepositoryUnavailable(_reason(exc, url)) from exc


def _reason(exc: GitFailed, url: str) -> str:
    what = {"auth": "the credentials were rejected (check RUNNER_GIT_TOKEN / ssh keys)",
            "missing": "the repository does not exist or is not visible to the runner",
            "transient": "the repository could not be reached"}.get(exc.kind, "git failed")
    return f"could not clone or fetch {display_url(url)}: {what}: {exc.tail()}"


def _healthy(mirror: Path, settings: Settings) -> bool:
    if not (mirror / "HEAD").is_file() or not (mirror / "config").is_file():
        return False
    # One git process for both questions (a bare repository; its origin/HEAD a commit):
    # "true" then the commit, exit 0 only when the ref resolves.
    proc = git("rev-parse", "--is-bare-repository", "--verify", "-q",
               "refs/remotes/origin/HEAD^{commit}", cwd=mirror, settings=settings, check=False)
    return proc.returncode == 0 and proc.stdout.split("\n", 1)[0].strip() == "true"


def _clone(url: str, mirror: Path, settings: Settings) -> str:
    tmp = mirror.with_name(mirror.name + ".tmp")
    remove_tree(tmp)
    try:
        git("init", "-q", "--bare", "--", str(tmp), settings=settings)
        git("remote", "add", "origin", "--", url, cwd=tmp, settings=settings)
        _fetch(url, tmp, settings, set_head=True)
    except BaseException:
        remove_tree(tmp)
        raise
    remove_tree(mirror)
    os.rename(tmp, mirror)
    log.info("mirror_cloned", mirror=mirror.name, repo=display_url(url))
    return "cloned"


def _fetch(url: str, mirror: Path, settings: Settings, *, set_head: bool = False) -> None:
    for attempt in retrying(settings, "fetch", url):
        with attempt:
            git("fetch", "-q", "--prune", "--tags", "origin", cwd=mirror, settings=settings,
                with_token=True)
    head = git("rev-parse", "--verify", "-q", "refs/remotes/origin/HEAD^{commit}",
               cwd=mirror, settings=settings, check=False)
    if set_head or head.returncode != 0:
        # Which branch is the remote's HEAD: asked on clone, and again when the branch it
        # named was pruned (a renamed default branch).
        for attempt in retrying(settings, "set-head", url):
            with attempt:
                git("remote", "set-head", "origin", "--auto", cwd=mirror, settings=settings,
                    with_token=True)
        git("rev-parse", "--verify", "-q", "refs/remotes/origin/HEAD^{commit}", cwd=mirror,
            settings=settings)


def repair_config(mirror: Path, url: str | None = None) -> list[str]:
    """Remove config the runner did not write (hooks, filters, helpers, includes …) and
    restore the remote's URL and refspec: an agent shares this user's files."""
    config = mirror / "config"
    proc = git("config", "--file", str(config), "--null", "--list", check=False)
    expected = {"remote.origin.fetch": ORIGIN_REFSPEC}
    if url is not None:
        expected["remote.origin.url"] = url
    removed: list[str] = []
    for entry in proc.stdout.split("\0"):
        key, _, value = entry.partition("\n")
        bad_value = key.lower() in expected and value != expected[key.lower()]
        if key and (bad_value or not _ALLOWED_CONFIG.match(key.lower())) and key not in removed:
            git("config", "--file", str(config), "--unset-all", "--", key, check=False)
            removed.append(key)
    for key in expected:
        if key in removed:
            git("config", "--file", str(config), "--", key, expected[key])
    if removed:
        log.warning("mirror_config_repaired", mirror=mirror.name, removed=removed)
    return removed


def mirrors(cache_dir: Path) -> list[Path]:
    if not cache_dir.is_dir():
        return []
    return sorted(p for p in cache_dir.glob("*.git") if p.is_dir() and not p.is_symlink())
