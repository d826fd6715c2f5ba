"""A later attempt of a job goes on from the earlier one (``config.on_retry: continue``).

The worktree starts from the job's branch as the earlier attempt left it (runner.worktree);
here is what the agent is told. An agent that can resume its own session (Claude Code:
``--resume <session_id>``, when the session's files are on this host) gets a short
message in that session; any other gets its prompt with a note of what the earlier
attempt left: its commits' subjects and its last summary.
"""

from __future__ import annotations

from typing import Any

MAX_SUBJECTS = 20
MAX_SUMMARY_CHARS = 2000


def earlier_attempt(job: dict[str, Any], commits: dict[str, Any]) -> bool:
    """True when an earlier attempt of this job ran (a recorded result, or commits on the
    branch that this attempt continues from)."""
    return isinstance(job.get("result"), dict) or bool(commits.get("count"))


def previous_session(job: dict[str, Any]) -> str | None:
    """The earlier attempt's session id, as its stream reported it (checked by the agent)."""
    result = job.get("result")
    value = result.get("session_id") if isinstance(result, dict) else None
    return value if isinstance(value, str) else None


def _what_it_left(job: dict[str, Any], commits: dict[str, Any]) -> list[str]:
    lines = []
    if job.get("error"):
        lines.append(f"The earlier attempt ended with: {str(job['error'])[:500]}")
    subjects = [c.get("subject", "") for c in commits.get("list") or []][:MAX_SUBJECTS]
    if subjects:
        lines.append("It left these commits on the branch (newest first), which you continue from:")
        lines += [f"- {s[:200]}" for s in subjects]
        if commits.get("count", 0) > len(subjects):
            lines.append(f"- … and {commits['count'] - len(subjects)} more")
    else:
        lines.append("It left no commits; the branch is where it started.")
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    summary = result.get("summary")
    if isinstance(summary, str) and summary.strip():
        lines.append(f"Its last summary: {summary.strip()[:MAX_SUMMARY_CHARS]}")
    return lines


def note(job: dict[str, Any], commits: dict[str, Any]) -> str:
    """Appended to the prompt of a fresh session that continues an earlier attempt."""
    return "\n".join([
        "", "", "---",
        "Note from the runner: this job was started before and did not finish. The working "
        "tree is the job's branch as the earlier attempt left it (the runner committed "
        "anything it left uncommitted).",
        *_what_it_left(job, commits),
        "Carry on from there; do not redo work that is already committed.",
    ])


def resume_message(job: dict[str, Any], commits: dict[str, Any]) -> str:
    """The message that resumes the agent's own earlier session of this job."""
    return "\n".join([
        "The runner stopped your earlier attempt at this task before it finished, and now "
        "resumes this session. The working tree is the job's branch as you left it (the "
        "runner committed anything left uncommitted).",
        *_what_it_left(job, commits),
        "Carry on with the original task from where you stopped.",
    ])


def resume_refused(outcome: Any) -> bool:
    """The agent could not resume the session it was given (Claude Code: "No conversation
    found with session ID …"): start afresh rather than fail the same way again."""
    reason = getattr(outcome, "reason", None) or ""
    return getattr(outcome, "verdict", None) is not None and outcome.verdict.value != "succeeded" \
        and "No conversation found with session ID" in reason
