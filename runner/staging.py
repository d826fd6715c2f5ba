"""Made ahead while the worker waits: the files and directories a job's start would create.

Creating a directory, a file or a symlink is slow on the disks these workers run on: on
this project's VM (ext4 on virtio) a ``mkdir`` took 0.34 ms, a new file 0.73 ms and a
symlink 0.97 ms (p50 of 200), a ``rename`` 0.035 ms. A job without a repository made
seven of them between its NOTIFY and its agent's exec — about 5 ms of the ~17
(benchmarks/agent_start.py). So while the queue is empty the worker makes them under
names of its own, and once it holds a job each is renamed into place.

Staged, per worker (a worker that got no job finds them again at its next wait):

* ``<job root>/.next-<worker>/`` (0700): the next job directory, holding ``work.ready/``
  and ``payload.json.ready``, ``agent.stdout.ready``, ``agent.stderr.ready`` (0600, empty);
* ``<log dir>/jobs/.next-<worker>.log``: the job log's link, to this iteration's run log;
* ``<state dir>/.current_job.ready``: the state file's temporary.

Everything here is best effort and checked where it is taken: only what this process's
uid made, of the right type and empty, is renamed; anything else is ignored, and the
caller creates its file the usual way. A ``.ready`` name never means anything else: the
leftovers check (an agent ran here: ``agent.stdout`` exists) never sees a staged file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from runner import state
from runner.workspace import (PAYLOAD_FILE, STDERR_FILE, STDOUT_FILE, WORK_DIR, made_ahead,
                              remove_tree)

if TYPE_CHECKING:  # not imported: runner.state (the supervisor's helper too) imports this
    from runner.settings import Settings

log = structlog.get_logger("runner.staging")

READY = ".ready"
STAGED_PREFIX = ".next-"
_FILES = (PAYLOAD_FILE, STDOUT_FILE, STDERR_FILE)


def _tag(settings: Settings) -> str:
    """A file-name-safe name for this worker (its id may hold any character)."""
    return hashlib.sha1(settings.worker_id.encode()).hexdigest()[:16]


def next_job_dir(settings: Settings) -> Path:
    return settings.job_root / f"{STAGED_PREFIX}{_tag(settings)}"


def job_log_link(settings: Settings) -> Path:
    return settings.log_dir / "jobs" / f"{STAGED_PREFIX}{_tag(settings)}.log"


def stage(settings: Settings, run_log: Path) -> None:
    """Make (or keep) what the next job's start takes. Never fails the iteration."""
    try:
        _stage_job_dir(next_job_dir(settings))
        _stage_link(job_log_link(settings), run_log)
        ready = settings.state_dir / state.CURRENT_JOB_READY
        if not made_ahead(ready, stat.S_ISREG):
            ready.unlink(missing_ok=True)
            _create_file(ready)
    except OSError as exc:
        log.warning("staging_failed", error=str(exc))


def _stage_job_dir(path: Path) -> None:
    if os.path.lexists(path) and not made_ahead(path, stat.S_ISDIR, empty=False, mode=0o700):
        remove_tree(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # the job root, as worktree.prepare makes it
    path.mkdir(mode=0o700, exist_ok=True)
    work = path / (WORK_DIR + READY)
    if not made_ahead(work, stat.S_ISDIR):
        if os.path.lexists(work):
            remove_tree(work)
        # the mode worktree.prepare's own mkdir gives (umask applied): the runner must still
        # enter it once an isolated agent owns it (Popen's chdir, as the runner's uid)
        work.mkdir()
    for name in _FILES:
        ready = path / (name + READY)
        if not made_ahead(ready, stat.S_ISREG):
            if os.path.lexists(ready):
                remove_tree(ready)
            _create_file(ready)


def _stage_link(link: Path, run_log: Path) -> None:
    target = os.path.relpath(run_log, link.parent)
    try:
        if os.readlink(link) == target:
            return
    except OSError:
        pass
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def take_job_dir(settings: Settings, job_dir: Path) -> bool:
    """Rename the staged job directory to ``job_dir`` (which must not exist yet)."""
    staged = next_job_dir(settings)
    if os.path.lexists(job_dir) or not made_ahead(staged, stat.S_ISDIR, empty=False, mode=0o700):
        return False
    try:
        os.rename(staged, job_dir)
    except OSError:
        return False
    return True


def take(path: Path, *, directory: bool = False) -> bool:
    """Rename ``<path>.ready``, made ahead and still empty, to ``path`` (which must not
    exist). False when there is none: the caller creates ``path`` itself."""
    ready = path.with_name(path.name + READY)
    if os.path.lexists(path) or not made_ahead(ready, stat.S_ISDIR if directory else stat.S_ISREG):
        return False
    try:
        os.rename(ready, path)
    except OSError:
        return False
    return True


def take_link(settings: Settings, link: Path, target: str) -> bool:
    """Move the staged job-log link to ``link`` when it points at ``target``."""
    staged = job_log_link(settings)
    try:
        if os.readlink(staged) != target:
            return False
        os.replace(staged, link)
    except OSError:
        return False
    return True
