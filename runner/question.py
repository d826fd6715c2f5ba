"""A blocked job's question: read from the agent's BLOCKED.md, for a person to answer.

The format (the agent rules, CLAUDE.md, tell the agent): free text — the question and what
the agent found — and, optionally, the choices it sees, one per line as a Markdown task
list item::

    Which database should the migration target?
    The code supports both; the docs disagree.

    - [ ] PostgreSQL 16
    - [ ] SQLite, for the tests only

The option lines become ``options`` (in order, at most MAX_OPTIONS), everything else the
``question``. What the agent wrote is only ever shown to a person: it is capped and
redacted here and decides nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from runner import secrets

FILE = "BLOCKED.md"
MAX_QUESTION_CHARS = 10_000
MAX_OPTIONS = 10
MAX_OPTION_CHARS = 300
MAX_READ_BYTES = 256 * 1024
EMPTY = "the agent wrote an empty BLOCKED.md"
OPTION = re.compile(r"^\s{0,3}[-*+]\s+\[[ xX]?\]\s+(?P<text>\S.*?)\s*$")


def parse(text: str) -> dict[str, Any]:
    """``{"question": str, "options": [str, …]}`` (options only when the agent gave any)."""
    lines, options = [], []
    for line in text.splitlines():
        found = OPTION.match(line)
        if found is None:
            lines.append(line)
        elif len(options) < MAX_OPTIONS:
            options.append(secrets.safe_text(found.group("text")[:MAX_OPTION_CHARS], None))
    question = "\n".join(lines).strip() or ("Choose one:" if options else EMPTY)
    out: dict[str, Any] = {"question": secrets.safe_text(question, MAX_QUESTION_CHARS)}
    if options:
        out["options"] = options
    return out


def read(workdir: Path) -> dict[str, Any] | None:
    """The question in ``workdir``'s BLOCKED.md, or None when there is none (a symlink or
    anything but a regular file is not read)."""
    path = workdir / FILE
    if not path.is_file() or path.is_symlink():
        return None
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as fh:
            data = fh.read(MAX_READ_BYTES)
    except OSError:
        return None
    return parse(data.decode("utf-8", errors="replace"))


def remove_earlier(workdir: Path) -> bool:
    """Take an earlier attempt's (or an earlier job's) BLOCKED.md out of the tree before the
    agent starts, so only a question this run writes blocks it. True when one was there."""
    path = workdir / FILE
    if path.is_symlink() or path.is_file():
        path.unlink()
        return True
    return False


def short(job: dict[str, Any], limit: int = 80) -> str:
    """The question of a blocked job on one line, for a listing."""
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    text = result.get("question") or job.get("error") or ""
    text = " ".join(str(text).split())
    options = result.get("options")
    if isinstance(options, list) and options:
        text += f" [{len(options)} options]"
    return text if len(text) <= limit else text[:limit - 1] + "…"
