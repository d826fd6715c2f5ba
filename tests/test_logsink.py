"""runner/logs.Sink: a line logged by a signal handler in the middle of another write."""

from __future__ import annotations

import sys

from runner.logs import Sink
from runner.secrets import Redactor


class _Stream:
    """Like a BufferedWriter: a write re-entered from the same thread raises RuntimeError.
    The first write is interrupted by a 'signal handler' that logs a line of its own."""

    def __init__(self, sink_holder: list) -> None:
        self.lines: list[str] = []
        self.inside = False
        self.sink_holder = sink_holder
        self.interrupted = False

    def write(self, text: str) -> None:
        if self.inside:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")
        self.inside = True
        try:
            if not self.interrupted:
                self.interrupted = True
                self.sink_holder[0].write_line("stop_requested")  # the SIGTERM handler
            self.lines.append(text)
        finally:
            self.inside = False

    def flush(self) -> None:
        pass


def test_a_handlers_line_mid_write_waits_its_turn_and_nothing_raises(monkeypatch):
    holder: list = []
    stream = _Stream(holder)
    monkeypatch.setattr(sys, "stdout", stream)
    sink = Sink(Redactor([]))
    holder.append(sink)
    sink.write_line("quota_low_waiting")
    assert stream.lines == ["quota_low_waiting\n", "stop_requested\n"]
    assert sink.fault is None
    sink.write_line("after")
    sink.close()
    assert stream.lines[-1] == "after\n"
