"""``config.push: true``: after success (and verify) the job's branch goes to the remote.

The push runs from the mirror, to the job's own (validated) URL rather than to a
configured remote, with the mirror's config repaired first: nothing the agent wrote
decides where the branch or the token goes. HTTPS credentials come from RUNNER_GIT_TOKEN
through a credential helper given on the command line; the token itself is only in the
git process's environment — never in argv, logs, job rows or the agent's environment.
The push is never forced: a remote branch with other work rejects it.
"""

from __future__ import annotations

from typing import Any

import structlog

from runner import repo_cache
from runner.errors import JobInputError
from runner.gitcmd import GitFailed, git, redact, rev
from runner.inputs import display_url
from runner.jobconfig import JobConfig
from runner.settings import Settings
from runner.workspace import Workspace

log = structlog.get_logger("runner.push")


class PushFailed(JobInputError):
    """The branch could not be pushed."""


def wanted(config: JobConfig, has_repo: bool) -> bool:
    if config.push and not has_repo:
        raise JobInputError("config.push needs a repo_url")
    return config.push


def push(ws: Workspace, settings: Settings) -> dict[str, Any]:
    """Push ``refs/heads/<branch>``; returns {remote, ref, sha} or raises PushFailed."""
    assert ws.mirror is not None and ws.branch is not None and ws.url is not None
    ref = f"refs/heads/{ws.branch}"
    with repo_cache.locked(ws.mirror, settings):
        repo_cache.repair_config(ws.mirror, ws.url)
        sha = rev(ws.mirror, ref, settings)
        if sha is None:
            raise PushFailed(f"branch {ws.branch!r} no longer exists; nothing to push")
        try:
            for attempt in repo_cache.retrying(settings, "push", ws.url):
                with attempt:
                    git("push", "--porcelain", "--no-verify", "--", ws.url, f"{sha}:{ref}",
                        cwd=ws.mirror, settings=settings, with_token=True)
        except GitFailed as exc:
            tail = redact(exc.tail(5), settings)
            raise PushFailed(f"pushing branch {ws.branch!r} to {display_url(ws.url)} failed "
                             f"({exc.kind}): {tail}; the commits stay in the runner's cache") from exc
    log.info("branch_pushed", branch=ws.branch, sha=sha, remote=display_url(ws.url))
    return {"remote": display_url(ws.url).strip("'"), "ref": ref, "sha": sha}
