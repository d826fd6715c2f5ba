"""The agent's stdout and stderr as files in the job directory, followed as they grow.

Files, not pipes: the CLI may exit before a slow reader has drained a pipe, and the end
of its output (the ``result`` event) is then lost; a file keeps everything. The follower
reads in bounded chunks and never holds more than about one line cap per stream, so a
200 MB line costs the iteration a few MiB, not the line.

A line longer than ``MAX_LINE_BYTES`` keeps its head and its tail with a note of how
much was cut between them. The cut points avoid JSON escapes and UTF-8 sequences, so a
huge ``result`` string of a JSON event stays parsable JSON, only shorter. Bytes are
decoded with replacement (invalid UTF-8 never raises) and NUL is dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_LINE_BYTES = 1 << 20
_TAIL_BYTES = 256 << 10
CHUNK_BYTES = 64 << 10


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "").rstrip("\r\n")


_BACKSLASH, _U = 0x5C, 0x75


def _unsafe(buf: bytes | bytearray, pos: int, known_start: bool) -> bool:
    """True when a cut at ``pos`` could split a UTF-8 sequence (a continuation byte at it)
    or a JSON escape (right after an escaping backslash, or inside ``\\uXXXX``).
    ``known_start``: ``buf`` begins where the line begins, so a run of backslashes that
    reaches its start is a real run (in a tail it may have begun before it)."""
    if pos < len(buf) and 0x80 <= buf[pos] < 0xC0:
        return True
    for j in range(max(0, pos - 6), pos):
        if buf[j] != _BACKSLASH:
            continue
        k = j
        while k > 0 and buf[k - 1] == _BACKSLASH and j - k < 4096:
            k -= 1
        if (k == 0 and not known_start) or j - k >= 4096:
            return True  # the run's length is unknown: its parity too
        if (j - k) % 2 == 0 and (j == pos - 1 or (buf[j + 1] == _U and pos <= j + 5)):
            return True  # an escaping backslash: the cut would fall inside its escape
    return False


def _safe_end(buf: bytes | bytearray, end: int) -> int:
    """A cut position a little at or before ``end`` that splits nothing (see ``_unsafe``);
    ``end`` itself when no such position is near."""
    for pos in range(end, max(0, end - 64), -1):
        if not _unsafe(buf, pos, known_start=True):
            return pos
    return end


def _safe_start(buf: bytes | bytearray, start: int) -> int:
    for pos in range(start, min(len(buf), start + 64)):
        if not _unsafe(buf, pos, known_start=False):
            return pos
    return min(start, len(buf))


class LineSplitter:
    """Bytes in, complete lines out, each at most about ``MAX_LINE_BYTES``."""

    def __init__(self, cap: int = MAX_LINE_BYTES) -> None:
        self.cap = cap
        self.head_cap = cap - min(_TAIL_BYTES, cap // 4)
        self.tail_cap = cap - self.head_cap
        self.buf = bytearray()      # the current line, while it is under the cap
        self.head: bytes | None = None  # set once the current line went over the cap
        self.tail = bytearray()
        self.cut = 0

    def feed(self, data: bytes) -> list[str]:
        lines = []
        start = 0
        while start < len(data):
            nl = data.find(b"\n", start)
            piece = data[start:] if nl < 0 else data[start:nl]
            self._add(piece)
            if nl < 0:
                break
            lines.append(self._finish())
            start = nl + 1
        return lines

    def flush(self) -> list[str]:
        """The last line, when the output did not end with a newline."""
        if self.buf or self.head is not None:
            return [self._finish()]
        return []

    def _add(self, piece: bytes) -> None:
        if self.head is None:
            self.buf += piece
            if len(self.buf) <= self.cap:
                return
            end = _safe_end(self.buf, self.head_cap)
            self.head = bytes(self.buf[:end])
            self.tail = self.buf[end:]
            self.buf = bytearray()
        else:
            self.tail += piece
        if len(self.tail) > 2 * self.tail_cap:
            drop = len(self.tail) - self.tail_cap
            self.cut += drop
            del self.tail[:drop]

    def _finish(self) -> str:
        if self.head is None:
            line = decode(bytes(self.buf))
        else:
            tail = self.tail
            if len(tail) > self.tail_cap:
                self.cut += len(tail) - self.tail_cap
                tail = tail[len(tail) - self.tail_cap:]
            # After a drop the tail starts at an arbitrary byte: move to a safe start,
            # at least 6 bytes in so an escape that began before it can be seen.
            begin = _safe_start(tail, min(6, len(tail))) if self.cut else 0
            self.cut += begin
            line = (decode(self.head) + f"…[runner: {self.cut} bytes cut from this line]…"
                    + decode(bytes(tail[begin:])))
        self.buf, self.head, self.tail, self.cut = bytearray(), None, bytearray(), 0
        return line


class Follower:
    """Reads a growing file in bounded chunks and hands out its complete lines."""

    def __init__(self, path: Path, stream: str) -> None:
        self.stream = stream
        self.fh = open(path, "rb")
        self.lines = LineSplitter()

    def read(self, budget: int = 4 * CHUNK_BYTES) -> list[str]:
        """Lines completed by at most ``budget`` new bytes ([] when nothing was added)."""
        out: list[str] = []
        while budget > 0:
            data = self.fh.read(min(CHUNK_BYTES, budget))
            if not data:
                break
            budget -= len(data)
            out.extend(self.lines.feed(data))
        return out

    def drain(self):
        """Every line left to the end of the file, the last partial one included, a
        bounded chunk at a time. Call once the writers are gone."""
        while True:
            more = self.read()
            yield from more
            if not more and self.fh.tell() >= os.fstat(self.fh.fileno()).st_size:
                break
        yield from self.lines.flush()
        self.fh.close()
