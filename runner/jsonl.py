"""One line of a JSONL stream (an agent's stream-json, the runner's own JSON log lines).

Standard library only: ``runner logs`` renders with it without importing the agents.
"""

from __future__ import annotations

import json
from typing import Any


def json_event(line: str) -> dict[str, Any] | None:
    """One line of a JSONL stream as an object, or None for anything else."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
