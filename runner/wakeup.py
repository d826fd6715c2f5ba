"""Waits that end the moment something happens, not at the next poll.

The agent loop and the heartbeat's thread each wait on file descriptors: the agent's
pidfd (readable when it exits), the heartbeat's database socket (a notification), and a
``Wakeup`` — a pipe another thread writes one byte to ("stop now", "the claim is lost").
A cancel then reaches the agent's SIGTERM without waiting out a poll interval, and the
heartbeat's thread ends as soon as the job does.
"""

from __future__ import annotations

import os
import select
from collections.abc import Sequence


class Wakeup:
    """A pipe: ``wake()`` from any thread (or a signal handler) makes ``fileno()``
    readable until ``clear()``."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._read

    def __enter__(self) -> "Wakeup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wake(self) -> None:
        if self._write < 0:
            return  # closed: its number may be another file's by now
        try:
            os.write(self._write, b"!")
        except OSError:
            pass  # full (already awake): nothing to add

    def clear(self) -> None:
        drain(self._read)

    def close(self) -> None:
        fds, (self._read, self._write) = (self._read, self._write), (-1, -1)
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def readable(fds: Sequence[int | None], seconds: float) -> set[int]:
    """Wait up to ``seconds`` until one of ``fds`` (None: left out) is readable; the
    readable ones (a closed peer or an error counts: reading will tell). With none at all
    it is a plain sleep. poll(), not select(): no limit on the descriptors' numbers."""
    poller = select.poll()
    for fd in fds:
        if fd is not None:
            poller.register(fd, select.POLLIN)
    return {fd for fd, _events in poller.poll(max(seconds, 0.0) * 1000)}


def drain(fd: int) -> None:
    """Read a non-blocking descriptor empty (what it held does not matter, only that
    something came: a wake-up, an inotify event)."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # BlockingIOError included: nothing more to read
        pass


def pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process ``pid`` exits (Linux 5.3+), or None
    where there is none (an older kernel, a seccomp profile that refuses it): the caller
    polls instead."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
