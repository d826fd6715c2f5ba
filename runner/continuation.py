"""A later attempt of a job goes on from the earlier one (``config.on_retry: continue``).

The worktree starts from the job's branch as the earlier attempt left it (runner.worktree);
here is what the agent is told. An agent that can resume its own session (Claude Code:
``--resume <session_id>``, when the session's files are on this host) gets a short
message in that session; any other gets its prompt with a note of what the earlier
attempt left: its commits' subjects and its last summary.

A job that was blocked and then answered (``runner answer``, ``runner_answer()``) goes on
the same way; its question and the person's answer are the resumed session's next user
message, or a note appended to the prompt of a fresh one.
"""

from __future__ import annotations

from typing import Any

import structlog

from runner import continue_from, inputs, question, worktree
from runner.workspace import Workspace

log = structlog.get_logger("runner.continuation")
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


def pending_answer(job: dict[str, Any]) -> dict[str, Any] | None:
    """The answer this attempt is to pass on: given for this attempt's number (a later retry
    of the same job resumes a session that already holds it)."""
    answer = job.get("answer")
    if isinstance(answer, dict) and isinstance(answer.get("text"), str) \
            and answer.get("attempt") == job.get("attempts"):
        return answer
    return None


def answer_lines(answer: dict[str, Any]) -> list[str]:
    """The question the agent asked and the answer a person gave, for the agent."""
    lines = ["You stopped earlier to ask a person (in BLOCKED.md):"]
    question = answer.get("question")
    if isinstance(question, str) and question.strip():
        lines += [f"> {line}" for line in question.strip()[:MAX_SUMMARY_CHARS].splitlines()]
    options = answer.get("options") if isinstance(answer.get("options"), list) else []
    lines += [f"> - [ ] {str(o)[:300]}" for o in options[:10]]
    lines += ["", "The answer:", "", str(answer["text"]).strip(), "",
              "The runner took that BLOCKED.md out of the working tree. Carry on with the task "
              "using this answer; if you need another decision, write a new BLOCKED.md."]
    return lines


def answer_note(job: dict[str, Any]) -> str:
    """Appended to a fresh session's prompt when the job's question was answered."""
    answer = pending_answer(job)
    return "" if answer is None else "\n".join(["", "", "---", *answer_lines(answer)])


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
    ]) + answer_note(job)


def resume_message(job: dict[str, Any], commits: dict[str, Any]) -> str:
    """The message that resumes the agent's own earlier session of this job."""
    answer = pending_answer(job)
    if answer is not None:
        return "\n".join(["A person answered your question; this session goes on.", "",
                          *answer_lines(answer)])
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


def plan(job: dict[str, Any], ws: Workspace, settings: Any, agent: Any, prompt: str,
         earlier: dict[str, Any] | None, continuing: bool) -> tuple[str, str | None, str]:
    """The prompt, the session to resume, and the prompt to start afresh with if the resume
    is refused: for an attempt that goes on from an earlier one of this job (its own session
    when on this host, else a note of what it left; with a person's answer when it was
    blocked), or from an earlier job (config.continue_from), or neither."""
    first = ws.start_commit == ws.base_commit and not earlier_attempt(job, {})
    # A first attempt starting at its base has no earlier commits to count (five git
    # processes fewer before its agent starts).
    so_far = worktree.commits(ws, settings) if continuing and not first else {}
    if continuing and earlier_attempt(job, so_far):
        question.remove_earlier(ws.path)  # only a question this run asks blocks it
        fresh = prompt + note(job, so_far)
        session = previous_session(job)
        resume = session if agent.resumable(ws.job_dir, session) else None
        log.info("continuing_earlier_attempt", resumed_session=resume,
                 commits=so_far.get("count", 0), answered=pending_answer(job) is not None)
        if resume is not None:
            return resume_message(job, so_far), resume, fresh
        return fresh, None, fresh
    prompt += answer_note(job)  # on_retry restart: the answer still goes
    if earlier is None:
        return prompt, None, prompt
    question.remove_earlier(ws.path)
    fresh = prompt + continue_from.note(earlier)
    session = previous_session(earlier)
    from_dir = inputs.job_dir(settings.job_root, str(earlier["id"]))
    adopted = agent.adopt_session(from_dir, ws.job_dir, ws.path, session)
    log.info("continuing_earlier_job", earlier_job=str(earlier["id"]),
             resumed_session=session if adopted else None)
    if adopted:
        return continue_from.resume_message(earlier, prompt, str(ws.path)), session, fresh
    return fresh, None, fresh
