"""A job that goes on from an earlier job (``config.continue_from``): a review or fix-up
step after an implement step.

It runs in that job's repository, on that job's branch unless its own ``branch`` names
another, starting from the head that job recorded (``result.commits.head``); its own
commits count from there. Its agent resumes that job's session when it can (Claude Code:
the transcript is copied from that job's directory into this job's own config dir, never
shared) and is told the next task in it; otherwise its prompt gets a note of what that job
did. The earlier job must have succeeded: ``continue_from`` implies ``depends_on`` (the
client adds it, and so does a trigger for a plain INSERT), so the job waits for it and ends
failed with the dependency when it fails.
"""

from __future__ import annotations

import re
from typing import Any

import structlog

from runner import inputs, worktree
from runner.errors import InvalidRef, JobInputError
from runner.jobconfig import JobConfig
from runner.settings import Settings
from runner.workspace import Workspace

log = structlog.get_logger("runner.continue_from")

HEAD = re.compile(r"^[0-9a-f]{40}$")
MAX_NOTE_CHARS = 2000


class ContinueFromUnusable(JobInputError):
    """The job named in config.continue_from cannot be continued from."""


def earlier_job(queue: Any, job: dict[str, Any], earlier_id: str | None) -> dict[str, Any] | None:
    """The succeeded job this one continues from, or None when it names none."""
    if not earlier_id:
        return None
    if earlier_id == str(job["id"]):
        raise ContinueFromUnusable("config.continue_from names this job itself")
    earlier = queue.get(earlier_id)
    if earlier is None:
        raise ContinueFromUnusable(f"config.continue_from names job {earlier_id}, which does not exist")
    if earlier["status"] != "succeeded":
        raise ContinueFromUnusable(
            f"config.continue_from names job {earlier_id}, which is {earlier['status']}, not "
            f"succeeded; a job continues only from a succeeded one (put it in depends_on too, "
            f"as runner.client.enqueue does, so that this job waits for it)")
    return earlier


def awaited(queue: Any, job_id: Any) -> bool:
    """True when a not-finished job continues from this one (its session files stay); also
    when the database cannot say (the sweep decides later)."""
    try:
        return queue.continued_by(job_id)
    except Exception as exc:  # noqa: BLE001 - keeping a directory a while costs only disk
        log.warning("continued_by_unknown", job_id=str(job_id), error=str(exc))
        return True


def _commits(earlier: dict[str, Any]) -> dict[str, Any]:
    result = earlier.get("result") if isinstance(earlier.get("result"), dict) else {}
    commits = result.get("commits")
    return commits if isinstance(commits, dict) else {}


def workspace_job(job: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """The job as ``worktree.prepare`` sees it: the earlier job's repository, branch and head."""
    own_url, url = job.get("repo_url"), earlier.get("repo_url")
    if own_url and url and own_url != url:
        raise ContinueFromUnusable(
            f"config.continue_from names job {earlier['id']}, which worked in "
            f"{inputs.display_url(url)}, not in this job's {inputs.display_url(own_url)}")
    if job.get("base_ref"):
        raise ContinueFromUnusable("a job with config.continue_from starts from that job's "
                                   "head: leave its base_ref empty")
    url = own_url or url
    if not url:
        return dict(job)
    commits = _commits(earlier)
    branch = job.get("branch") or commits.get("branch") or earlier.get("branch") \
        or f"runner/{str(earlier['id'])[:8]}"
    out = {**job, "repo_url": url, "branch": branch}
    head = commits.get("head")
    if isinstance(head, str) and HEAD.match(head):
        out["base_ref"] = head
    return out


def prepare(job: dict[str, Any], earlier: dict[str, Any] | None, config: JobConfig,
            settings: Settings) -> Workspace:
    """``worktree.prepare`` for the job, from the earlier job's head when it names one."""
    if earlier is None:
        return worktree.prepare(job, config, settings)
    effective = workspace_job(job, earlier)
    try:
        ws = worktree.prepare(effective, config, settings)
    except InvalidRef:
        raise ContinueFromUnusable(
            f"config.continue_from names job {earlier['id']}, whose head "
            f"{str(effective.get('base_ref'))[:12]} is not in this worker's repository cache "
            f"(it ran on another host and its branch was not pushed); push that job "
            f"(config.push) or run both on one host") from None
    log.info("continuing_from_job", earlier_job=str(earlier["id"]), branch=ws.branch,
             start=ws.start_commit)
    return ws


def resume_message(earlier: dict[str, Any], prompt: str, workdir: str) -> str:
    """The next user message in the earlier job's resumed session: the new task."""
    return "\n".join([
        f"The runner resumed your session of job {earlier['id']} for a next step, in a new "
        f"job. Its working tree is {workdir} (a new directory: paths of the earlier job "
        f"no longer exist), on the branch as the earlier job left it.",
        "", "The next task:", "", prompt])


def note(earlier: dict[str, Any]) -> str:
    """Appended to a fresh session's prompt: what the earlier job did."""
    result = earlier.get("result") if isinstance(earlier.get("result"), dict) else {}
    lines = ["", "", "---",
             f"Note from the runner: this job continues job {earlier['id']}, which succeeded. "
             f"The working tree starts from its branch as it left it."]
    asked = str(earlier.get("prompt") or "").strip()
    if asked:
        lines += ["It was asked:", *[f"> {x}" for x in asked[:MAX_NOTE_CHARS].splitlines()]]
    subjects = [str(c.get("subject", ""))[:200] for c in _commits(earlier).get("list") or []][:20]
    if subjects:
        lines += ["Its commits (newest first):", *[f"- {s}" for s in subjects]]
    summary = result.get("summary")
    if isinstance(summary, str) and summary.strip():
        lines.append(f"Its summary: {summary.strip()[:MAX_NOTE_CHARS]}")
    return "\n".join(lines)
