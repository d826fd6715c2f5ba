"""runner/listen.py: the wait loop keeps the worker's presence fresh while it waits."""

from __future__ import annotations

import threading

from runner.listen import Listener, wait_and_claim


def test_presence_is_called_while_waiting(db_url):
    calls = []
    found = wait_and_claim(lambda: None, Listener(db_url, "w", ["default"]), wait_seconds=1.6,
                           poll_seconds=5, stop=threading.Event(),
                           presence=lambda: calls.append(1), presence_seconds=0.4)
    assert found is None
    assert 2 <= len(calls) <= 4
