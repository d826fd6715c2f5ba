"""What a job's attempt works in, shared by the modules that make, fill, keep and remove it.

``Workspace`` is the job directory and the tree the agent runs in (runner.worktree makes it,
runner.clone gives an isolated agent its own, runner.leftovers, runner.push and runner.gates
read it); ``remove_tree`` deletes such a tree whatever the agent did to its modes;
``made_ahead`` says whether a file or directory made in advance may be taken.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

# The job directory's layout (docs/architecture.md): the tree the agent runs in, the job
# for the agent to read, and the agent's output as it was written.
WORK_DIR, PAYLOAD_FILE = "work", "payload.json"
STDOUT_FILE, STDERR_FILE = "agent.stdout", "agent.stderr"
MAX_LISTED = 100  # files listed by name in a result before "… and N more"
KEPT_WORK = "leftovers.json"  # in the job dir: work the branch does not hold (patch, big files)
# The subject of the runner's commit of changes the agent left uncommitted (runner.leftovers).
LEFTOVER_SUBJECT = "runner: changes the agent left uncommitted"


@dataclass
class Workspace:
    job_dir: Path
    path: Path  # where the agent runs
    mirror: Path | None = None
    branch: str | None = None
    base_commit: str | None = None
    url: str | None = None
    start_commit: str | None = None  # where this attempt's work tree started
    clone: bool = False  # a clone the agent owns (runner.clone), not a worktree of the mirror


def remove_tree(path: Path) -> None:
    """Delete without following symlinks (shutil.rmtree never descends into a link);
    directories an agent made read-only are opened up first."""
    if path.is_symlink() or path.is_file():
        path.unlink()
        return

    def retry_writable(func, failed, exc_info) -> None:  # noqa: ANN001 - rmtree's onerror
        if isinstance(exc_info[1], FileNotFoundError):
            return  # removed meanwhile (another worker's sweep): gone is what we wanted
        parent = os.path.dirname(failed)
        try:
            if not os.path.islink(parent):
                os.chmod(parent, 0o700)
            if func in (os.rmdir, os.open, os.scandir) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
            if func in (os.open, os.scandir):
                # A directory the agent made unreadable: opened up, it is removed whole.
                shutil.rmtree(failed, onerror=retry_writable)
            else:
                func(failed)
        except FileNotFoundError:
            pass

    if path.exists():
        shutil.rmtree(path, onerror=retry_writable)


def made_ahead(path: Path, kind, *, empty: bool = True, mode: int | None = None) -> bool:  # noqa: ANN001
    """What the runner made ahead and may take (runner/staging.py, runner/state.py): made
    by this uid, of that kind (never a symlink), and empty (a file of no bytes, a directory
    with no entry), with ``mode`` if given."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not kind(st.st_mode) or st.st_uid != os.geteuid():
        return False
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        return False
    if empty:
        if stat.S_ISREG(st.st_mode):
            return st.st_size == 0
        try:
            with os.scandir(path) as entries:
                return next(entries, None) is None
        except OSError:
            return False
    return True
