"""One line of a JSONL stream (an agent's stream-json, the runner's own JSON log lines).

Standard library only: ``runner logs`` renders with it without importing the agents.
"""

from __future__ import annotations

import json
import json.scanner
from typing import Any


# json.loads without its two Python wrappers (a few µs a line of a 100 MB log): the C
# scanner itself, from index 0 of a line that starts with "{".
_scan = json.scanner.make_scanner(json.JSONDecoder())


def json_event(line: str) -> dict[str, Any] | None:
    """One line of a JSONL stream as an object, or None for anything else."""
    if not line.startswith("{"):
        line = line.strip()
        if not line.startswith("{"):
            return None
    try:
        value, end = _scan(line, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    if end != len(line) and line[end:].strip():
        return None  # trailing text: not one JSON object (json.loads would refuse it too)
    return value if isinstance(value, dict) else None
