"""Wait until a file grows: inotify on Linux (a line appended is seen within
milliseconds), a plain sleep elsewhere or when inotify is not available."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from runner.wakeup import drain, readable

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_NONBLOCK, _IN_CLOEXEC = 0x2, 0x8, 0o4000, 0o2000000


@functools.cache
def _libc():
    """The C library, once per process: the interpreter's own symbols first (no search;
    ``find_library`` may run ``ldconfig``), by name where those lack inotify."""
    return _with_inotify(None) or _with_inotify(ctypes.util.find_library("c") or "libc.so.6")


def _with_inotify(name: str | None):
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1  # noqa: B018 - present only on Linux
        return libc
    except (OSError, AttributeError):
        return None


class FileWatch:
    """``wait(timeout)`` returns when ``path`` was written to, or after ``timeout``."""

    def __init__(self, path: Path) -> None:
        self.fd = -1
        libc = _libc()
        if libc is None:
            return
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return
        if libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY | _IN_CLOSE_WRITE) < 0:
            os.close(fd)
            return
        self.fd = fd

    @property
    def polling(self) -> bool:
        return self.fd < 0

    def wait(self, timeout: float) -> None:
        if self.fd < 0:
            time.sleep(timeout)
            return
        if readable([self.fd], timeout):
            self.drain()

    def drain(self) -> None:
        """Read the events waiting (what they say does not matter: the file grew)."""
        drain(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def close_in_background(watches: Iterable[FileWatch]) -> None:
    """Close ``watches`` on a thread of their own: closing an inotify descriptor waits for
    the kernel's grace period (10-30 ms measured here), which is no reason to delay the
    job's record (the agent loop ends with this)."""
    watches = list(watches)
    if watches:
        threading.Thread(target=lambda: [w.close() for w in watches], daemon=True,
                         name="inotify-close").start()
