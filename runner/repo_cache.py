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
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog
from tenacity import (Retrying, retry_if_exception, stop_after_attempt,
                      wait_exponential)

from runner import gitcmd, gitfiles
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
def locked(mirror: Path, settings: Settings, *, wait: bool = True,
           timeout: float | None = None) -> Iterator[bool]:
    """Hold the mirror's inter-process lock (fcntl.flock on ``<mirror>.lock``).

    Yields True once held. With ``wait=False`` it yields False at once when another
    process holds it; otherwise it waits up to ``timeout`` seconds (default
    RUNNER_GIT_LOCK_TIMEOUT_SECONDS).
    """
    mirror.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(mirror)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        limit = settings.git_lock_timeout_seconds if timeout is None else timeout
        deadline = time.monotonic() + limit
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
                                      f"more than {limit:.0f} s") from None
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


@dataclass
class Mirror:
    """A mirror ready for a job: how it got so, its config after repair_config (key →
    last value, as ``git config --get`` reads it) and the commits ``refs`` named."""
    action: str  # 'cloned' | 'fetched'
    config: dict[str, str]
    refs: dict[str, str | None]


def ensure_mirror(url: str, mirror: Path, settings: Settings) -> str:
    """Clone or fetch the mirror (caller holds the lock). Returns 'cloned' or 'fetched'."""
    return prepare_mirror(url, mirror, settings).action


def prepare_mirror(url: str, mirror: Path, settings: Settings,
                   refs: tuple[str, ...] = (), *,
                   while_fetching: Callable[[], None] | None = None) -> Mirror:
    """Clone or fetch the mirror (caller holds the lock), then resolve ``refs`` (object
    names such as ``refs/heads/x^{commit}``; validated names only) in the same git process
    that checks the remote's HEAD. ``while_fetching`` is called once while the fetch of an
    existing mirror runs (work that does not need its result: taking a spare worktree);
    never for a clone.

    A mirror git cannot read is removed and cloned again, once. Transient network
    failures are retried; a missing repository or rejected credentials are not.
    The config repair_config checks is read in Python when it is in git's plain form.
    """
    try:
        config = _bare_config(mirror, settings)
        if config is None:
            if mirror.exists():
                log.warning("mirror_corrupt_recloning", mirror=mirror.name, reason="unreadable")
            return _clone(url, mirror, settings, refs)
        config = _repair(mirror, url, config)[0]
        try:
            return Mirror("fetched", _last_values(config),
                          _fetch(url, mirror, settings, refs, while_fetching=while_fetching))
        except GitFailed as exc:
            if exc.kind not in ("corrupt", "other"):
                raise
            log.warning("mirror_corrupt_recloning", mirror=mirror.name, reason=exc.tail())
            return _clone(url, mirror, settings, refs)
    except GitFailed as exc:
        if exc.kind == "transient":
            raise RepositoryUnreachable(_reason(exc, url)) from exc
        raise RepositoryUnavailable(_reason(exc, url)) from exc


def _reason(exc: GitFailed, url: str) -> str:
    what = {"auth": "the credentials were rejected (check RUNNER_GIT_TOKEN / ssh keys)",
            "missing": "the repository does not exist or is not visible to the runner",
            "transient": "the repository could not be reached"}.get(exc.kind, "git failed")
    return f"could not clone or fetch {display_url(url)}: {what}: {exc.tail()}"


def _bare_config(mirror: Path, settings: Settings) -> list[tuple[str, str]] | None:
    """The mirror's config entries, or None when it is no readable bare repository whose
    origin/HEAD names a commit (an unreadable object store is cloned again, not patched by
    the fetch). Read from the files when they say so plainly (runner/gitfiles.py), else
    asked of git."""
    if not (mirror / "HEAD").is_file() or not (mirror / "config").is_file():
        return None
    entries = gitfiles.plain_config(mirror / "config")
    if entries is None:
        entries = _list_config(mirror)
    if entries is None or ("core.bare", "true") not in entries:
        return None
    if gitfiles.origin_head_present(mirror):
        return entries
    proc = git("rev-parse", "--verify", "-q", "refs/remotes/origin/HEAD^{commit}", cwd=mirror,
               settings=settings, check=False)
    return entries if proc.returncode == 0 else None


def _list_config(mirror: Path) -> list[tuple[str, str]] | None:
    proc = git("config", "--file", str(mirror / "config"), "--null", "--list", check=False)
    if proc.returncode != 0:
        return None
    return [(k, v) for k, _, v in (e.partition("\n") for e in proc.stdout.split("\0")) if k]


def _last_values(entries: list[tuple[str, str]]) -> dict[str, str]:
    return {key: value for key, value in entries}  # a later value of a key wins, as in git


def resolve(repo: Path, names: tuple[str, ...], settings: Settings) -> dict[str, str | None]:
    """The object each name resolves to (None: none): read from the files when they say it
    plainly (gitfiles.commits_of), else in one ``git cat-file --batch-check``. Names come
    on stdin, one a line, never as options; callers pass validated refs only."""
    if not names:
        return {}
    assert all("\n" not in n for n in names)
    try:  # the files, when they say it plainly: a git process fewer before every job
        return gitfiles.commits_of(repo, names)
    except (gitfiles.Unsure, OSError, ValueError, zlib.error):
        pass
    out = git("cat-file", "--batch-check=%(objectname)", cwd=repo, settings=settings,
              input="".join(f"{n}\n" for n in names)).stdout.splitlines()
    return {n: (line if re.fullmatch(r"[0-9a-f]{40,64}", line or "") else None)
            for n, line in zip(names, out + [""] * (len(names) - len(out)))}


def _clone(url: str, mirror: Path, settings: Settings, refs: tuple[str, ...] = ()) -> Mirror:
    tmp = mirror.with_name(mirror.name + ".tmp")
    remove_tree(tmp)
    try:
        git("init", "-q", "--bare", "--", str(tmp), settings=settings)
        git("remote", "add", "origin", "--", url, cwd=tmp, settings=settings)
        resolved = _fetch(url, tmp, settings, refs, set_head=True)
        config = _last_values(_list_config(tmp) or [])
    except BaseException:
        remove_tree(tmp)
        raise
    remove_tree(mirror)
    os.rename(tmp, mirror)
    log.info("mirror_cloned", mirror=mirror.name, repo=display_url(url))
    return Mirror("cloned", config, resolved)


_ORIGIN_HEAD = "refs/remotes/origin/HEAD^{commit}"


def _fetch(url: str, mirror: Path, settings: Settings, refs: tuple[str, ...] = (), *,
           set_head: bool = False,
           while_fetching: Callable[[], None] | None = None) -> dict[str, str | None]:
    """Fetch; return what ``refs`` and the remote's HEAD resolve to (one process)."""
    for attempt in retrying(settings, "fetch", url):
        with attempt:
            # No auto-maintenance here: its process would sit between a job's claim and
            # its agent; upkeep() runs it after the job instead.
            fetch = gitcmd.start("fetch", "-q", "--prune", "--tags", "--no-auto-maintenance",
                                 "origin", cwd=mirror, settings=settings, with_token=True)
            if while_fetching is not None:
                during, while_fetching = while_fetching, None  # once, at the first try
                try:
                    during()
                except BaseException:
                    fetch.abandon()
                    raise
            fetch.wait()
    names = (_ORIGIN_HEAD, *refs)
    resolved = resolve(mirror, names, settings)
    if set_head or resolved[_ORIGIN_HEAD] is None:
        # Which branch is the remote's HEAD: asked on clone, and again when the branch it
        # named was pruned (a renamed default branch).
        for attempt in retrying(settings, "set-head", url):
            with attempt:
                git("remote", "set-head", "origin", "--auto", cwd=mirror, settings=settings,
                    with_token=True)
        resolved = resolve(mirror, names, settings)
        if resolved[_ORIGIN_HEAD] is None:
            git("rev-parse", "--verify", "-q", _ORIGIN_HEAD, cwd=mirror, settings=settings)
            raise GitFailed(["rev-parse", _ORIGIN_HEAD], 1, "origin/HEAD names no commit", "other")
    return resolved


def upkeep(mirror: Path, settings: Settings) -> None:
    """git's own housekeeping of the mirror (``maintenance run --auto``: a gc once loose
    objects or packs pile up), after a job instead of inside its fetch, where it cost a
    process on the way to the agent's start. Under the lock, unless another worker holds
    it (a job of theirs; the next upkeep does it). Never raises: a mirror never gc'd is
    slower, nothing worse."""
    if not (mirror / "HEAD").is_file() or not _gc_may_be_due(mirror):
        return
    try:
        with locked(mirror, settings, wait=False) as got:
            if got:
                git("maintenance", "run", "--auto", "--quiet", cwd=mirror, settings=settings)
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("mirror_upkeep_failed", mirror=mirror.name,
                    error=exc.tail() if isinstance(exc, GitFailed) else str(exc))


# git's defaults for gc --auto (git-gc(1)): loose objects, estimated from objects/17, and
# packs. gc.autoPackLimit is not a key a mirror may keep (_ALLOWED_CONFIG), gc.auto is.
_GC_AUTO, _GC_AUTO_PACK_LIMIT = 6700, 50


def _gc_may_be_due(mirror: Path) -> bool:
    """False only when git's own ``gc --auto`` test would surely say "not yet": fewer
    loose objects in ``objects/17`` than gc.auto/256 and fewer packs than its limit — so
    the usual job costs no git process for its upkeep. True whenever the files do not
    say that plainly (git then decides)."""
    entries = gitfiles.plain_config(mirror / "config")
    if entries is None:
        return True
    auto = _last_values(entries).get("gc.auto", str(_GC_AUTO))
    if not auto.isdigit():
        return True
    if int(auto) == 0:
        return False  # gc --auto turned off
    try:
        loose = sum(1 for name in os.listdir(mirror / "objects" / "17") if len(name) == 38)
    except FileNotFoundError:
        loose = 0
    except OSError:
        return True
    packs = len(list((mirror / "objects" / "pack").glob("pack-*.idx")))
    return loose > (int(auto) + 255) // 256 or packs >= _GC_AUTO_PACK_LIMIT


def repair_config(mirror: Path, url: str | None = None) -> list[str]:
    """Remove config the runner did not write (hooks, filters, helpers, includes …) and
    restore the remote's URL and refspec: an agent shares this user's files."""
    return _repair(mirror, url, _list_config(mirror) or [])[1]


def _repair(mirror: Path, url: str | None,
            entries: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """repair_config on entries already listed: the entries after it, the keys removed."""
    config = mirror / "config"
    expected = {"remote.origin.fetch": ORIGIN_REFSPEC}
    if url is not None:
        expected["remote.origin.url"] = url
    removed: list[str] = []
    for key, value in entries:
        bad_value = key.lower() in expected and value != expected[key.lower()]
        if key and (bad_value or not _ALLOWED_CONFIG.match(key.lower())) and key not in removed:
            git("config", "--file", str(config), "--unset-all", "--", key, check=False)
            removed.append(key)
    kept = [(k, v) for k, v in entries if k not in removed]
    for key in expected:
        if key in removed:
            git("config", "--file", str(config), "--", key, expected[key])
            kept.append((key, expected[key]))
    if removed:
        log.warning("mirror_config_repaired", mirror=mirror.name, removed=removed)
    return kept, removed


def mirrors(cache_dir: Path) -> list[Path]:
    if not cache_dir.is_dir():
        return []
    return sorted(p for p in cache_dir.glob("*.git") if p.is_dir() and not p.is_symlink())
