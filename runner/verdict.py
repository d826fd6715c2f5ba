"""What one finished run of the agent says, before anything is recorded.

In order: a verdict the stream gave early (``EarlyStop``), a stop the runner made
(``outcome.stopped``, with what was spent until then), else the agent's reader on the
exit; then what the workspace adds — a full disk named in a failure's reason, a question
in BLOCKED.md turning a success into ``blocked``. The table in runner/outcome.py decides
what each verdict writes; this module only decides the verdict.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runner import question
from runner.outcome import Outcome, Verdict, stopped
from runner.process import ProcessResult
from runner.workspace import Workspace

FULL_DISK_BYTES = 1 << 20  # below this much free space a disk counts as full


def of_run(result: ProcessResult, reader: Any, timeout: int, ws: Workspace | None) -> Outcome:
    """The verdict of the run ``result`` (its stream read by ``reader``) in workspace ``ws``."""
    if result.early is not None:
        return result.early
    if result.stop_reason is not None:
        outcome = stopped(result.stop_reason, timeout=timeout)
        # What was spent before the stop is recorded too (usage added up from the stream).
        outcome.result.update(partial(reader))
        return outcome
    outcome = reader.outcome(result.output())
    if outcome.verdict is not Verdict.SUCCEEDED and ws is not None:
        # The agent's own output lives on the same disk: when that disk is full, its
        # "No space left on device" may never have been written, so say it here.
        full = disk_full_note(ws.job_dir)
        if full and outcome.reason and full not in outcome.reason:
            outcome.reason = f"{outcome.reason} ({full})"
    if outcome.verdict is Verdict.SUCCEEDED and ws is not None:
        asked = question.read(ws.path)
        if asked is not None:  # only shown to a person: capped, redacted, decides nothing
            outcome.verdict = Verdict.BLOCKED
            outcome.reason = asked["question"]
            outcome.result.update(asked)
    return outcome


def partial(reader: Any) -> dict[str, Any]:
    """What the reader summed up so far (usage, session), or nothing if it cannot say."""
    try:
        return reader.partial_result() if reader is not None else {}
    except Exception:  # a reader's summary must never cost the recording
        return {}


def disk_full_note(job_dir: Path) -> str | None:
    """A sentence when the disk holding the job directory is (nearly) full, else None."""
    try:
        st = os.statvfs(job_dir)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= FULL_DISK_BYTES:
        return None
    return f"the disk holding the job directory is full: {free} bytes free"
