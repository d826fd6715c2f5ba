"""The small pieces a rendered log line is made of (runner/render.py): a clipped value,
a key=value pair, the time column, the one argument of a tool call worth showing.

Pure functions of their input; none may raise on odd input (a log is read at 2 am).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from runner.clock import clock_time, shown_local

# The width of the time column ("HH:MM:SSZ ") for lines without a time of their own.
PAD = " " * (len(clock_time(datetime.now(timezone.utc))) + 1)
TEXT_MAX = 4000
ARG_MAX = 200

# The argument that says what a tool call does, by tool name (Claude Code's tools).
_KEY_ARG = {
    "Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path", "Read": "file_path",
    "NotebookEdit": "notebook_path", "Bash": "command", "Grep": "pattern", "Glob": "pattern",
    "WebFetch": "url", "WebSearch": "query", "Task": "description", "Agent": "description",
    "TodoWrite": None,
}


def clip(text: Any, limit: int = ARG_MAX) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: Any, limit: int = ARG_MAX) -> str:
    return clip(" ".join(str(text).split()), limit)


# The runner's own timestamps (structlog, UTC with Z): their time is the text's, no parsing.
UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT((?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)(?:\.\d{1,6})?Z")
_NEEDS_QUOTES = re.compile(r'[\s"=]')


def hhmmss(value: Any) -> str | None:
    """The time of an ISO timestamp as runner/clock.py shows it (18:20:01Z)."""
    if isinstance(value, str) and (stamp := UTC_STAMP.fullmatch(value)) and not shown_local():
        return stamp[1] + "Z"
    try:
        return clock_time(datetime.fromisoformat(str(value)))
    except (ValueError, TypeError, OverflowError):
        return None


def kv(key: str, value: Any) -> str:
    if isinstance(value, str):
        shown = value if value and not _NEEDS_QUOTES.search(value) \
            else json.dumps(value, ensure_ascii=False)
    else:
        shown = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    return f"{key}={clip(shown, 1000)}"


def key_argument(name: str, args: Any) -> str:
    """The one argument of a tool call worth showing: the file, command, pattern or URL."""
    if not isinstance(args, dict):
        return one_line(args) if args else ""
    wanted = _KEY_ARG.get(name, "")
    if wanted and isinstance(args.get(wanted), str):
        return one_line(args[wanted])
    for key in ("file_path", "path", "absolute_path", "command", "pattern", "url", "query"):
        if isinstance(args.get(key), str):
            return one_line(args[key])
    for value in args.values():  # others: the first string argument
        if isinstance(value, str):
            return one_line(value)
    return one_line(json.dumps(args, default=str)) if args else ""


def token_counts(usage: Any) -> str:
    if not isinstance(usage, dict):
        return ""
    tin = usage.get("input_tokens")
    tout = usage.get("output_tokens")
    cached = (usage.get("cache_read_input_tokens") or 0) + (usage.get("cached_input_tokens") or 0)
    parts = [f"tokens in={tin} out={tout}"] if tin is not None or tout is not None else []
    if cached:
        parts.append(f"cached={cached}")
    return " ".join(parts)


def text_block(prefix: str, text: str) -> list[str]:
    lines = clip(text.strip(), TEXT_MAX).splitlines() or [""]
    return [f"{prefix}{lines[0]}"] + [f"{PAD}{' ' * 8}{line}" for line in lines[1:]]
