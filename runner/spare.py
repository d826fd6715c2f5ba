"""Spare worktrees: a checkout of a mirror's origin/HEAD made after a job, for the next.

Writing a repository's files is most of the time between a claim and the agent's start
(``reset --hard`` of 100 files: 40-90 ms). So after a job is recorded, and before its
iteration exits, one detached worktree of the same mirror is checked out in advance::

    <job root>/.spare/.making-<mirror>.<token>/work   while it is made (flock(2) held on
                                                      the .making-* directory)
    <job root>/.spare/<mirror>.<token>/work           complete: renamed once checked out

``worktree.prepare`` takes one under the mirror lock (``take``): the ``work`` directory is
renamed into the job's directory, its registration in the mirror repointed, then
``git checkout -f -B <branch> <start>`` (git writes only the files that differ from the
spare's commit) and ``git clean`` (nothing but the commit's files, as today's path makes).

Never for an agent under a uid of its own (it gets a clone: runner/clone.py). A spare is
the runner's own, as the mirror is: an agent sharing the runner's uid could write either.
Nothing here fails a job: a spare that is missing, odd or refused by git is removed, and
the job takes the ordinary path (``worktree add`` + ``reset --hard``).

Every rename and every removal happens under the mirror lock, so the sweep (which holds
it) never sees a spare half-renamed, and a ``.making-*`` directory it can flock is one
whose maker died.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from pathlib import Path

import structlog

from runner import gitcmd, repo_cache
from runner.gitfiles import SHA1
from runner.agent_user import AgentUser
from runner.gitcmd import GitFailed, git
from runner.settings import Settings
from runner.workspace import remove_tree

log = structlog.get_logger("runner.spare")

SPARE_DIR = ".spare"
MAKING = ".making-"
# A spare nobody took for this long goes: its repository is no longer worked on here, and
# a checkout that far behind saves little.
STALE_SECONDS = 24 * 3600
# How long a finished spare waits for the mirror lock to be renamed into place.
RENAME_WAIT_SECONDS = 5.0


class SpareRefused(Exception):
    """This spare cannot be used (not ours, broken, or git refused it)."""


def enabled(settings: Settings, agent: AgentUser) -> bool:
    return settings.spare_worktrees > 0 and not agent.isolated


def spare_root(settings: Settings) -> Path:
    return settings.job_root / SPARE_DIR


def _spares(settings: Settings, mirror: Path) -> list[Path]:
    """Complete spares of this mirror, newest first."""
    root = spare_root(settings)
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{mirror.name}.*") if not p.name.startswith(MAKING)]
    return sorted(found, key=_mtime, reverse=True)


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


# -- taking one (worktree.prepare, under the mirror lock) -------------------------------

def take(settings: Settings, mirror: Path, work: Path, branch: str, start: str) -> bool:
    """Move a spare of ``mirror`` to ``work`` and check out ``branch`` at ``start`` there
    (caller holds the mirror lock; ``work`` does not exist). False: none usable, ``work``
    still absent, the caller makes the worktree as usual. Files the spare may hold beyond
    its commit are left for ``clean`` (outside the lock)."""
    if not enabled(settings, settings.agent):
        return False
    for spare in _spares(settings, mirror):
        try:
            _move(spare, work, mirror)
            git("checkout", "-q", "-f", "-B", branch, start, "--", cwd=work, settings=settings)
            log.info("spare_taken", mirror=mirror.name, spare=spare.name)
            return True
        except Exception as exc:  # noqa: BLE001 - whatever it is, the ordinary path follows
            if not _refuse(settings, mirror, spare, work, exc):
                return False  # work may still be in the way: only worktree add can tell
    return False


def _move(spare: Path, work: Path, mirror: Path) -> Path:
    """The spare's ``work`` checked, renamed to ``work`` and its registration repointed
    there; the emptied spare directory removed. Returns the registration."""
    admin = _check(spare / "work", mirror)
    os.rename(spare / "work", work)
    _repoint(admin, work)
    remove_tree(spare)
    return admin


def _refuse(settings: Settings, mirror: Path, spare: Path, work: Path, exc: Exception) -> bool:
    """A spare that could not be used: say why and remove it (and whatever of it reached
    ``work``). False when that failed too (the sweep removes it later)."""
    log.warning("spare_refused", mirror=mirror.name, spare=spare.name,
                error=exc.tail() if isinstance(exc, GitFailed) else str(exc))
    try:
        remove_tree(spare)
        if work.exists() or work.is_symlink():
            remove_tree(work)
        git("worktree", "prune", cwd=mirror, settings=settings, check=False)
    except Exception as exc2:  # noqa: BLE001 - the sweep removes it later
        log.warning("spare_not_removed", spare=spare.name, error=str(exc2))
        return False
    return True


class Early:
    """A spare taken before the mirror's fetch (``take_early``), checked while it runs.

    The common job starts from the remote's HEAD, where the spare already is: then the
    job's branch is made at that commit and the worktree's HEAD pointed at it, in Python
    (``finish``) — no ``checkout`` and no ``clean``, whose ~8 ms were after the fetch. What
    allows that is ``git status`` run alongside the fetch: nothing modified, untracked or
    ignored in the spare. Anything else (the fetch moved HEAD, another start, a file
    that is not the commit's, a ref git would write differently) takes ``checkout -f
    -B`` + ``clean``, as ``take`` does."""

    def __init__(self, spare: str, work: Path, admin: Path, commit: str,
                 check: gitcmd.Running) -> None:
        self.spare, self.work, self.admin, self.commit, self.check = spare, work, admin, commit, check
        self.cleaned = False  # True: the work tree is the commit's exactly, no clean needed

    def finish(self, settings: Settings, mirror: Path, branch: str, start: str) -> bool:
        """Under the mirror lock: ``branch`` at ``start`` checked out in ``work``. False when
        git refused the spare: it is gone, ``work`` absent, the ordinary path follows."""
        status = self.check.wait(check=False)
        pristine = status.returncode == 0 and status.stdout == ""
        if pristine and start == self.commit and _switch(mirror, self.admin, branch, start):
            self.cleaned = True
            log.info("spare_taken", mirror=mirror.name, spare=self.spare, checkout=False)
            return True
        try:
            git("checkout", "-q", "-f", "-B", branch, start, "--", cwd=self.work, settings=settings)
        except GitFailed as exc:
            _refuse(settings, mirror, spare_root(settings) / self.spare, self.work, exc)
            return False
        log.info("spare_taken", mirror=mirror.name, spare=self.spare, checkout=True,
                 pristine=pristine, moved=start != self.commit)
        return True

    def abandon(self) -> None:
        """The job takes another path (or failed): the spare's check ends, its tree goes
        (its registration is pruned with the next prune)."""
        self.check.abandon()
        if self.work.exists() or self.work.is_symlink():
            remove_tree(self.work)


def take_early(settings: Settings, mirror: Path, work: Path) -> Early | None:
    """Under the mirror lock, before its fetch: a spare of ``mirror`` moved to ``work``, its
    ``git status`` started; None when there is none usable (``work`` still absent)."""
    if not enabled(settings, settings.agent):
        return None
    for spare in _spares(settings, mirror):
        try:
            commit = (_check(spare / "work", mirror) / "HEAD").read_text().strip()
            if not SHA1.fullmatch(commit):
                raise SpareRefused("its HEAD is not a detached commit")
            admin = _move(spare, work, mirror)
            check = gitcmd.start("status", "--porcelain", "--ignored", "--untracked-files=all",
                                 "--no-renames", cwd=work, settings=settings)
            return Early(spare.name, work, admin, commit, check)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the ordinary path follows
            if not _refuse(settings, mirror, spare, work, exc):
                return None
    return None


def _switch(mirror: Path, admin: Path, branch: str, commit: str) -> bool:
    """Create ``refs/heads/<branch>`` at ``commit`` and point the worktree's HEAD at it, as
    git writes them (a lock file renamed over the ref); False, nothing changed, when the
    files are not in the plain form this needs (then git does it). The caller holds the
    mirror lock and knows the branch does not exist (worktree._claim_branch)."""
    ref = mirror / "refs" / "heads" / branch
    lock = ref.with_name(ref.name + ".lock")
    try:
        if ref.exists() or ref.is_symlink() or (mirror / "reftable").exists():
            return False
        ref.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(commit + "\n")
        os.rename(lock, ref)
    except OSError:
        with contextlib.suppress(OSError):
            lock.unlink()
        return False
    # git's own lock name for HEAD: never a file followed or one in use by a git process
    head = admin / "HEAD.lock"
    try:
        fd = os.open(head, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError:
        return False  # git's checkout -B resets the branch just made, as it would anyway
    with os.fdopen(fd, "w") as fh:
        fh.write(f"ref: refs/heads/{branch}\n")
    os.replace(head, admin / "HEAD")
    return True


def clean(work: Path, settings: Settings) -> None:
    """Remove anything in a taken spare that its commit lacks (untracked and ignored files,
    nested repositories): the agent starts from exactly the commit's files."""
    git("clean", "-q", "-ffdx", cwd=work, settings=settings)


def _check(work: Path, mirror: Path) -> Path:
    """The spare's registration in ``mirror`` (``worktrees/<name>``), when ``work`` is a real
    directory whose ``.git`` names it and the registration names ``work`` back."""
    if work.is_symlink() or not work.is_dir():
        raise SpareRefused("no work directory")
    dotgit = work / ".git"
    if dotgit.is_symlink() or not dotgit.is_file():
        raise SpareRefused("no .git file")
    text = dotgit.read_text().strip()
    if not text.startswith("gitdir: "):
        raise SpareRefused(".git is not a worktree's")
    admin = Path(text[len("gitdir: "):])
    if os.path.realpath(admin.parent) != os.path.realpath(mirror / "worktrees") \
            or admin.is_symlink() or not admin.is_dir():
        raise SpareRefused("registered in another repository")
    named = (admin / "gitdir").read_text().strip()
    if os.path.realpath(named) != os.path.realpath(dotgit):
        raise SpareRefused("its registration names another directory")
    return admin


def _repoint(admin: Path, work: Path) -> None:
    """Tell git where the worktree now is: ``worktrees/<name>/gitdir`` (what ``worktree
    move`` does, without a process). Replaced whole, never half-written."""
    tmp = admin / "gitdir.tmp"
    tmp.write_text(os.path.realpath(work / ".git") + "\n")
    os.replace(tmp, admin / "gitdir")


# -- making one (after a job, before the iteration exits) --------------------------------

def replenish(settings: Settings, mirror: Path) -> Path | None:
    """Make one spare of ``mirror`` at its origin/HEAD unless it has enough; the path of the
    new spare, or None. Never raises: a spare is only ever a saving."""
    if not enabled(settings, settings.agent) or not (mirror / "HEAD").is_file():
        return None
    if len(_spares(settings, mirror)) >= settings.spare_worktrees:
        return None
    started = time.monotonic()
    root = spare_root(settings)
    token = secrets.token_hex(4)
    making, done = root / f"{MAKING}{mirror.name}.{token}", root / f"{mirror.name}.{token}"
    fd = None
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with repo_cache.locked(mirror, settings, wait=False) as got:
            if not got:  # a fetch or checkout of another worker: not worth waiting for
                log.info("spare_skipped", mirror=mirror.name, reason="mirror busy")
                return None
            making.mkdir(mode=0o700)
            fd = os.open(making, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX)  # "being made": the sweep leaves it alone
            git("worktree", "add", "-q", "--detach", "--no-checkout", "--", str(making / "work"),
                "refs/remotes/origin/HEAD", cwd=mirror, settings=settings)
        # The files, outside the lock (as a job's checkout is).
        git("reset", "-q", "--hard", cwd=making / "work", settings=settings)
        # Not the hour a job would wait: a long push of another worker only costs this spare.
        with repo_cache.locked(mirror, settings, timeout=RENAME_WAIT_SECONDS):
            admin = _check(making / "work", mirror)
            os.rename(making, done)
            _repoint(admin, done / "work")
        log.info("spare_made", mirror=mirror.name, spare=done.name,
                 ms=round((time.monotonic() - started) * 1000, 1))
        return done
    except Exception as exc:  # noqa: BLE001 - a spare is never worth a failed iteration
        log.warning("spare_not_made", mirror=mirror.name,
                    error=exc.tail() if isinstance(exc, GitFailed) else str(exc))
        # Without the lock (it may be what failed): a registration whose directory is gone
        # is only pruned, by the sweep or the next prune under the lock.
        for path in (making, done):
            try:
                remove_tree(path)
            except OSError as exc2:  # the sweep removes it later
                log.warning("spare_not_removed", spare=path.name, error=str(exc2))
        return None
    finally:
        if fd is not None:
            os.close(fd)


# -- the sweep ----------------------------------------------------------------------------

def sweep(settings: Settings, mirror: Path) -> list[str]:
    """Under ``mirror``'s lock (held by the caller, who prunes after): remove its spares
    that are no longer wanted — a maker's leftovers (``.making-*`` nobody holds), broken
    ones, those beyond RUNNER_SPARE_WORKTREES (all with 0, or for an isolated agent) and
    those older than a day. Returns the names removed."""
    root = spare_root(settings)
    if not root.is_dir():
        return []
    removed = []
    keep = settings.spare_worktrees if enabled(settings, settings.agent) else 0
    for path in sorted(root.glob(f"{MAKING}{mirror.name}.*")):
        if _abandoned(path):
            remove_tree(path)
            removed.append(path.name)
    for i, path in enumerate(_spares(settings, mirror)):
        why = None
        if i >= keep:
            why = "more than RUNNER_SPARE_WORKTREES"
        elif time.time() - _mtime(path) > STALE_SECONDS:
            why = "not taken for a day"
        else:
            try:
                _check(path / "work", mirror)
            except Exception as exc:  # noqa: BLE001 - unreadable is broken too
                why = str(exc)
        if why:
            remove_tree(path)
            removed.append(path.name)
            log.info("spare_removed", spare=path.name, why=why)
    return removed


def sweep_orphans(settings: Settings, mirrors: list[Path]) -> list[str]:
    """Spares whose mirror is gone (no lock to take: nothing can use them)."""
    root = spare_root(settings)
    if not root.is_dir():
        return []
    names = {m.name for m in mirrors}
    removed = []
    for path in sorted(root.iterdir()):
        name = path.name.removeprefix(MAKING)
        if name.rsplit(".", 1)[0] in names or (path.name.startswith(MAKING) and not _abandoned(path)):
            continue
        remove_tree(path)
        removed.append(path.name)
        log.info("spare_removed", spare=path.name, why="its mirror is gone")
    return removed


def _abandoned(making: Path) -> bool:
    """True when no maker holds the directory's flock (its maker died)."""
    if making.is_symlink() or not making.is_dir():
        return True
    try:
        fd = os.open(making, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
