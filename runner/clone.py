"""The workspace of an agent under a uid of its own: a clone of the mirror that it owns.

A worktree of the shared mirror writes its objects, refs and config into the mirror, so
an agent that can commit there could rewrite the mirror, other jobs' branches and the
config every later git call reads. Instead, when the agent has its own uid
(RUNNER_AGENT_USER), ``work/`` is a clone of the job's branch only (``--no-local
--single-branch --no-tags``: a pack of what that branch reaches, so no other job's
branch or objects), without a remote, handed to the agent's uid. The mirror stays the
runner's (0700 cache): the agent can reach neither it nor its config.

The agent's commits come back without the runner running git in the agent's repository
(its config, hooks and alternates are the agent's): a git process under the **agent's
uid** writes a bundle of the job's branch, and the runner fetches that bundle — plain
pack data, checked with ``transfer.fsckObjects`` — into the mirror's branch, only as a
fast-forward. Then the work tree is handed back to the runner, which keeps the leftovers
(runner.leftovers) reading its files only.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import structlog

from runner import repo_cache
from runner.agent_user import AgentUser
from runner.gitcmd import GitFailed, git, redact, rev
from runner.procgroup import kill_attempt
from runner.process import hand_tree
from runner.settings import Settings
from runner.workspace import Workspace, remove_tree

log = structlog.get_logger("runner.clone")

_LOCAL = {"GIT_ALLOW_PROTOCOL": "file"}  # the mirror and the bundle are local files


def create(ws: Workspace, settings: Settings) -> None:
    """Clone the job's branch (already at its start in the mirror) into ``ws.path``."""
    assert ws.mirror is not None and ws.branch is not None
    git("clone", "-q", "--no-local", "--no-checkout", "--single-branch", "--no-tags",
        "--branch", ws.branch, "--", str(ws.mirror), str(ws.path), settings=settings, env=_LOCAL)
    # No way back to the mirror from the agent's repository (nor its path in its config).
    git("remote", "remove", "origin", cwd=ws.path, settings=settings)
    git("reset", "-q", "--hard", cwd=ws.path, settings=settings)


def hand_to_agent(ws: Workspace, agent: AgentUser) -> None:
    hand_tree(ws.path, agent.uid, agent.gid)


def bring_back(ws: Workspace, settings: Settings, agent: AgentUser, job_id: str) -> dict[str, Any] | None:
    """Fetch the agent's commits on the job's branch into the mirror; then the work tree
    is the runner's again. Returns None when there was nothing new, else what happened."""
    assert ws.mirror is not None and ws.branch is not None
    try:
        if not (ws.path / ".git").is_dir() or ws.path.is_symlink():
            return None
        start = ws.start_commit or rev(ws.mirror, f"refs/heads/{ws.branch}", settings)
        export = ws.job_dir / "export"
        remove_tree(export)
        export.mkdir(mode=0o700)
        os.chown(export, agent.uid, agent.gid)
        bundle = export / "work.bundle"
        made = _bundle_as_agent(ws, agent, bundle, start, settings)
        kill_attempt(job_id, agent)  # anything the agent's own git config started
        hand_tree(export, os.geteuid(), os.getegid())  # the agent's 0700: ours again first
        if made is not None:
            return {"error": made}
        if not bundle.is_file() or bundle.is_symlink():
            return None  # no commit since the start
        ref = f"refs/heads/{ws.branch}"
        try:
            with repo_cache.locked(ws.mirror, settings):
                repo_cache.repair_config(ws.mirror, ws.url)
                # Not forced: the agent's branch must contain what the mirror holds.
                git("-c", "transfer.fsckObjects=true", "-c", "fetch.fsckObjects=true",
                    "fetch", "-q", "--no-tags", "--update-head-ok", "--no-write-fetch-head",
                    "--", str(bundle), f"{ref}:{ref}", cwd=ws.mirror, settings=settings, env=_LOCAL)
        except GitFailed as exc:
            return {"error": f"the agent's commits could not be brought into the runner's cache "
                             f"(a rewritten branch is not taken): {exc.tail()}"}
        finally:
            remove_tree(export)
        head = rev(ws.mirror, ref, settings)
        log.info("agent_commits_brought_back", branch=ws.branch, head=head)
        return {"head": head}
    finally:
        # The runner reads the files from here on (leftovers) and removes them later.
        if ws.path.exists() and not ws.path.is_symlink():
            hand_tree(ws.path, os.geteuid(), os.getegid())


def _bundle_as_agent(ws: Workspace, agent: AgentUser, bundle: Path, start: str | None,
                     settings: Settings) -> str | None:
    """Run ``git bundle create`` as the agent in its repository; an error sentence or None."""
    revs = [f"refs/heads/{ws.branch}"] + ([f"^{start}"] if start else [])
    argv = agent.command(["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                          "bundle", "create", "-q", str(bundle), *revs])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
           "HOME": str(ws.job_dir / "home"), "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(argv, cwd=ws.path, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace",
                              timeout=settings.git_timeout_seconds, start_new_session=True)
    except subprocess.TimeoutExpired:
        return "writing the agent's commits out timed out"
    if proc.returncode == 0:
        return None
    if "empty bundle" in proc.stderr.lower():
        bundle.unlink(missing_ok=True)
        return None  # nothing since the start
    tail = " | ".join(line.strip() for line in proc.stderr.splitlines()[-3:] if line.strip())
    return f"the agent's commits could not be read from its repository: {redact(tail, settings)[:500]}"
