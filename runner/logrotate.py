"""Rotation of the per-iteration run logs and the per-job links to them.

``logs/runs/<timestamp>-<n>.log`` is one iteration's output; ``logs/jobs/<id>.log`` is a
relative symlink to the run log that ran the job. Between iterations (so no run log is
being written): run logs older than the delete age go, older than the gzip age are
compressed (keeping their time, so the delete age still counts from the iteration),
a job link whose run log was compressed is re-pointed at the ``.gz``, and links whose
run log is gone are removed.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Rotated:
    gzipped: int = 0
    relinked: int = 0
    deleted: int = 0
    pruned: int = 0
    problems: tuple[str, ...] = ()

    def summary(self) -> str | None:
        if not (self.gzipped or self.relinked or self.deleted or self.pruned):
            return None
        return (f"rotation: gzipped {self.gzipped} run log(s), re-pointed {self.relinked} job "
                f"link(s), deleted {self.deleted} run log(s), removed {self.pruned} stale job link(s)")


def rotate(runs: Path, jobs: Path, gzip_after_s: float, delete_after_s: float,
           now: float | None = None) -> Rotated:
    now = time.time() if now is None else now
    done, problems = Rotated(), []
    for entry in _files(runs):
        name, age = entry.name, now - _mtime(entry)
        if not (name.endswith(".log") or name.endswith(".log.gz")):
            continue
        # Oldest first: nothing is compressed only to be deleted. `>=`: a log written a
        # moment ago counts as older than "0 hours".
        if age >= delete_after_s:
            if _unlink(entry):
                done.deleted += 1
        elif name.endswith(".log") and age >= gzip_after_s:
            if _gzip(entry):
                done.gzipped += 1
            else:
                problems.append(f"rotation: could not gzip {entry}")
    for link in _links(jobs):
        if not link.name.endswith(".log") or link.exists():
            continue
        target = os.readlink(link)
        if (link.parent / (target + ".gz")).is_file():
            if _relink(link, target + ".gz"):
                done.relinked += 1
            else:
                problems.append(f"rotation: could not re-point {link}")
    for link in _links(jobs):
        if not link.exists() and _unlink(link):
            done.pruned += 1
    done.problems = tuple(problems)
    return done


def _files(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def _links(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_symlink()]
    except OSError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except OSError:
        return False


def _gzip(path: Path) -> bool:
    def write(tmp: Path) -> None:
        st = path.stat()
        with open(path, "rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.utime(tmp, (st.st_atime, st.st_mtime))  # the .gz ages on from the run

    return _replace(path, write)


def _relink(link: Path, target: str) -> bool:
    return _replace(link, lambda tmp: os.symlink(target, tmp))


def _replace(old: Path, write) -> bool:  # noqa: ANN001 - write(tmp) makes the new file
    """Write ``old``.gz through a temp file renamed into place, then remove ``old``."""
    new = old.with_name(old.name + ".gz")
    tmp = old.with_name(f".{new.name}.tmp.{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, new)
        old.unlink()
        return True
    except OSError:
        _unlink(tmp)
        return False
