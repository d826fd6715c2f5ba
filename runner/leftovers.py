"""Changes the agent left uncommitted: committed by the runner on the job's branch (or,
with ``config.commit_leftovers: false``, kept as a patch in the job directory).

Tracked changes and new files that are not ignored count; files bigger than
RUNNER_LEFTOVER_MAX_FILE_BYTES are left out of the commit and listed. The commit has the
runner's own identity (RUNNER_LEFTOVER_AUTHOR_NAME/EMAIL) and the subject
:data:`SUBJECT`, so ``result.commits`` can mark it as the runner's.

Git never runs through the worktree's own git files here: the agent can rewrite
``work/.git``, the worktree's index and HEAD. The mirror is the git dir (its config
repaired under the mirror lock, every call hardened by runner.gitcmd), the agent's files
are only the work tree, and the index is a scratch file of the runner's in the job
directory. The commit is made with plumbing (write-tree, commit-tree) and the branch
moved only if it still points where the agent left it.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import structlog

from runner import clone, inputs, repo_cache
from runner.gitcmd import GitFailed, git, rev
from runner.process import STDOUT_FILE
from runner.settings import Settings
from runner.workspace import KEPT_WORK, LEFTOVER_SUBJECT, MAX_LISTED, Workspace

log = structlog.get_logger("runner.leftovers")

SUBJECT = LEFTOVER_SUBJECT
PATCH = "leftovers-{stamp}.patch"  # one per attempt: a later attempt keeps earlier ones
_INDEX = "leftovers.index"



def keep(ws: Workspace, settings: Settings, *, commit: bool) -> dict[str, Any] | None:
    """Commit (or save as a patch) what the agent left uncommitted in the worktree.

    Returns what ``result.leftovers`` says — None when nothing was left. Never raises for
    a git failure: the job's outcome stands, the failure is said in the result, and the
    job directory is kept so that the files are still there.
    """
    if ws.mirror is None or ws.branch is None or ws.base_commit is None:
        return None
    if ws.path.is_symlink() or not ws.path.is_dir() or not (ws.mirror / "HEAD").is_file():
        return None  # the worktree is gone: nothing to keep
    index = ws.job_dir / _INDEX
    try:
        with repo_cache.locked(ws.mirror, settings):
            repo_cache.repair_config(ws.mirror, ws.url)
            found = _keep(ws, settings, index, commit)
    except (GitFailed, OSError) as exc:
        log.error("leftovers_not_kept", error=str(exc))
        found = {"error": f"the runner could not keep the changes the agent left uncommitted: "
                          f"{exc}; they are still in {ws.path}"}
    finally:
        index.unlink(missing_ok=True)
    if found is not None and (found.get("patch") or found.get("skipped_large") or found.get("error")):
        # Work that is not on the branch: the directory stays (runner.sweep keeps it too).
        (ws.job_dir / KEPT_WORK).write_text(json.dumps(found, indent=2))
        found["kept_in"] = str(ws.job_dir)
    return found


def rescue_previous(job: dict[str, Any], settings: Settings, *, commit: bool) -> dict[str, Any] | None:
    """Keep what a previous attempt left uncommitted when it had no chance to (its
    iteration was killed): its worktree is still in the job directory, and the job's
    branch — made by this job — is where those changes go, before the next attempt
    starts from that branch (``config.on_retry: continue``, which the caller checked).
    ``commit``: ``config.commit_leftovers`` (else a patch is kept)."""
    url, job_id = job.get("repo_url"), str(job["id"])
    if not url:
        return None
    job_dir = inputs.job_dir(settings.job_root, job_id)
    work = job_dir / "work"
    if job_dir.is_symlink() or work.is_symlink() or not (work / ".git").exists():
        return None
    if not (job_dir / STDOUT_FILE).exists():
        return None  # no agent ran in it (its checkout failed): nothing of an agent's
    inputs.check_repo_url(url, settings)
    branch = inputs.check_ref(job.get("branch") or f"runner/{job_id[:8]}", "branch", settings)
    mirror = repo_cache.mirror_dir(settings.cache_dir, url)
    if not (mirror / "HEAD").is_file():
        return None
    owner = git("config", "--file", str(mirror / "config"), "--get", "--",
                f"branch.{branch}.runnerjob", check=False).stdout.strip()
    if owner != job_id:
        return None  # not this job's branch: nothing of this job's to add to it
    own_clone = (work / ".git").is_dir()  # the agent's clone (runner/clone.py)
    ws = Workspace(job_dir=job_dir, path=work, mirror=mirror, branch=branch, base_commit="",
                   url=url, clone=own_clone)
    if own_clone and settings.agent.isolated:
        back = clone.bring_back(ws, settings, settings.agent, job_id)
        if back is not None and back.get("error"):
            log.warning("previous_attempt_commits_not_brought_back", error=back["error"])
    found = keep(ws, settings, commit=commit)
    if found is not None:
        log.info("previous_attempt_leftovers_kept", committed=found.get("committed"))
    return found


def _keep(ws: Workspace, settings: Settings, index: Path, commit: bool) -> dict[str, Any] | None:
    assert ws.mirror is not None and ws.branch is not None
    ref = f"refs/heads/{ws.branch}"
    head = rev(ws.mirror, ref, settings)
    if head is None:
        return None  # the branch is gone (reported by worktree.commits)
    index.unlink(missing_ok=True)

    def run(*args: str, **kw: Any) -> str:
        # core.bare=false: the mirror is bare; with an explicit work tree it is not.
        return git("-c", "core.bare=false", f"--git-dir={ws.mirror}", f"--work-tree={ws.path}",
                   *args, cwd=ws.path, settings=settings,
                   env={"GIT_INDEX_FILE": str(index), "GIT_LITERAL_PATHSPECS": "1", **kw}).stdout

    run("read-tree", head)
    _refresh(run)
    names = [n for n in run("ls-files", "-z", "--modified", "--deleted", "--others",
                            "--exclude-standard").split("\0") if n]
    wanted, large = [], []
    for name in dict.fromkeys(names):
        size = _size(ws.path / name)
        if size is not None and size > settings.leftover_max_file_bytes:
            large.append({"path": name, "bytes": size})
        else:
            wanted.append(name)
    if not wanted and not large:
        return None
    found: dict[str, Any] = {"committed": None, "files": wanted[:MAX_LISTED],
                             "files_count": len(wanted)}
    if large:
        found["skipped_large"] = large[:MAX_LISTED]
        found["skipped_large_count"] = len(large)
        found["max_file_bytes"] = settings.leftover_max_file_bytes
    if wanted:
        listing = ws.job_dir / (_INDEX + ".paths")
        listing.write_bytes(b"\0".join(n.encode("utf-8", "surrogateescape") for n in wanted) + b"\0")
        try:
            run("add", "-A", f"--pathspec-from-file={listing}", "--pathspec-file-nul")
        finally:
            listing.unlink(missing_ok=True)
    tree = run("write-tree").strip()
    if tree == run("rev-parse", f"{head}^{{tree}}").strip():
        found["files"], found["files_count"] = [], 0
        return found if large else None
    if not commit:
        patch = ws.job_dir / PATCH.format(stamp=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        fd = os.open(patch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(run("diff", "--cached", "--binary", "--no-ext-diff", "--no-textconv", head))
        found["patch"] = str(patch)
        log.info("leftovers_saved_as_patch", patch=str(patch), files=len(wanted))
        return found
    who = {"GIT_AUTHOR_NAME": settings.leftover_author_name,
           "GIT_AUTHOR_EMAIL": settings.leftover_author_email,
           "GIT_COMMITTER_NAME": settings.leftover_author_name,
           "GIT_COMMITTER_EMAIL": settings.leftover_author_email}
    message = (f"{SUBJECT}\n\nThe agent ended with these changes not committed; the runner "
               f"committed them so that they are not lost ({len(wanted)} file(s)).\n")
    sha = git("commit-tree", tree, "-p", head, "-m", message, cwd=ws.mirror,
              settings=settings, env=who).stdout.strip()
    # Moved only from where the agent left it: nothing else's commit is overwritten.
    git("update-ref", "-m", "runner: leftovers", ref, sha, head, cwd=ws.mirror, settings=settings)
    found["committed"] = sha
    log.info("leftovers_committed", sha=sha, files=len(wanted), skipped_large=len(large))
    if not ws.clone:
        _sync_worktree_index(ws, index)
    return found


def _sync_worktree_index(ws: Workspace, index: Path) -> None:
    """The worktree's HEAD is the branch, now at the runner's commit: give it the index of
    that commit too, so that ``git status`` in verify shows a clean tree, not the commit
    undone. The worktree's admin dir is taken from ``work/.git`` only when it is the
    mirror's own ``worktrees/<name>`` that links back to this worktree."""
    assert ws.mirror is not None
    try:
        dotgit = ws.path / ".git"
        if dotgit.is_symlink() or not dotgit.is_file():
            return
        text = dotgit.read_text(errors="replace").strip()
        if not text.startswith("gitdir: "):
            return
        admin = Path(text[len("gitdir: "):])
        if admin.is_symlink() or admin.resolve().parent != (ws.mirror / "worktrees").resolve():
            return
        back = (admin / "gitdir").read_text(errors="replace").strip()
        if Path(back).resolve() != dotgit.resolve() or (admin / "index").is_symlink():
            return
        os.replace(index, admin / "index")
    except OSError as exc:  # only cosmetic: the commit is made
        log.warning("worktree_index_not_updated", error=str(exc))


def _refresh(run) -> None:  # noqa: ANN001
    # A freshly read index has no stat data: refresh hashes each file once, so that
    # ls-files --modified lists only files whose content changed.
    try:
        run("update-index", "-q", "--refresh")
    except GitFailed as exc:
        if exc.code != 1:  # 1: "needs update" (changed files) is the normal answer
            raise


def _size(path: Path) -> int | None:
    """The size of a regular file (a link, a directory or a missing path: None)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
