"""The job's working directory: a git worktree from the shared mirror cache.

Layout under ``RUNNER_JOB_ROOT/<job id>/``: ``payload.json`` (written by the iteration)
and ``work/`` — the worktree the agent runs in, or an empty directory for a job without
a repository. Keeping the payload outside ``work/`` means the agent cannot commit it.

Branch policy (docs/git.md): the job's branch (``job.branch``, default
``runner/<first 8 of the job id>``) is created from the base. An existing branch of that
name is reset only when that loses nobody's work: it was made by an earlier attempt of
this same job, or it holds no commit that the base lacks. Otherwise the job fails with
the reason. With ``config.push`` a branch that already exists on the remote with commits
the base lacks fails up front (the push would be rejected after the agent's work).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

import structlog

from runner import clone, inputs, repo_cache, spare, staging
from runner.errors import InvalidRef, JobInputError, RepositoryUnavailable
from runner.gitcmd import GitFailed, git, rev
from runner.jobconfig import JobConfig
from runner.settings import Settings
from runner.workspace import KEPT_WORK, LEFTOVER_SUBJECT, MAX_LISTED, WORK_DIR, Workspace, remove_tree

log = structlog.get_logger("runner.worktree")



class BranchConflict(JobInputError):
    """The job's branch already holds other work."""


class UnsafeRepository(JobInputError):
    """The repository holds a symlink that leads out of its worktree."""




def prepare(job: dict[str, Any], config: JobConfig, settings: Settings) -> Workspace:
    """Create the job directory and, for a job with a repository, its worktree
    (``config``: the job's parsed config — its push and on_retry decide the branch)."""
    job_id = str(job["id"])
    job_dir = inputs.job_dir(settings.job_root, job_id)
    url = job.get("repo_url")
    branch = base_ref = None
    if url:
        inputs.check_repo_url(url, settings)
        branch = inputs.check_ref(job.get("branch") or f"runner/{job_id[:8]}", "branch", settings)
        base_ref = job.get("base_ref")
        if base_ref is not None:
            inputs.check_ref(base_ref, "base_ref", settings)
    continuing = config.on_retry == "continue"
    settings.job_root.mkdir(parents=True, exist_ok=True)
    # An earlier attempt's worktree may still be registered for this very path: its spare
    # is taken after the branch checks (below), which must not see the spare as that one.
    earlier_attempt = job_dir.exists() or job_dir.is_symlink()
    _clear_previous_attempt(job_dir)
    # The directory the worker made while it waited, renamed (runner/staging.py), or a new one.
    staged = staging.take_job_dir(settings, job_dir)
    job_dir.mkdir(mode=0o700, exist_ok=True)
    work = job_dir / WORK_DIR
    if not url:
        if not staging.take(work, directory=True):
            work.mkdir()
        if settings.agent.isolated:  # the agent's to write in, under its own uid
            os.chown(work, settings.agent.uid, settings.agent.gid)
        return Workspace(job_dir=job_dir, path=work)
    assert branch is not None
    if staged:  # git makes the worktree's directory itself
        with contextlib.suppress(OSError):
            os.rmdir(work.with_name(WORK_DIR + staging.READY))
    mirror = repo_cache.mirror_dir(settings.cache_dir, url)
    push = config.push
    # An agent under a uid of its own gets a clone it owns (runner/clone.py); one that shares
    # the runner's uid could write the mirror anyway, so it gets the cheaper worktree.
    own_clone = settings.agent.isolated
    candidates = _base_candidates(base_ref)
    local_ref, remote_ref = f"refs/heads/{branch}^{{commit}}", f"refs/remotes/origin/{branch}^{{commit}}"
    with repo_cache.locked(mirror, settings):
        # A checkout made in advance (runner/spare.py), taken and checked while the mirror
        # fetches (both cores at work; the fetch alone is the wait).
        taken_early: list[spare.Early] = []

        def take_spare() -> None:
            early = spare.take_early(settings, mirror, work)
            if early is not None:
                taken_early.append(early)

        try:
            # The fetch, then every ref this job asks about resolved in one git process.
            ready = repo_cache.prepare_mirror(
                url, mirror, settings, (*candidates, local_ref, remote_ref),
                while_fetching=None if own_clone or earlier_attempt else take_spare)
            action = ready.action
            if taken_early and action != "fetched":  # the fetch became a new clone: the
                taken_early.pop().abandon()          # spare is registered nowhere now
            early = taken_early[0] if taken_early else None
            # Stale worktree registrations are pruned by the sweep before each claim
            # (runner/sweep.py), and here only when `worktree add` trips over one.
            base_commit = _resolve_base(ready, candidates, base_ref, url)
            start, base_commit = _claim_branch(
                mirror, branch, job_id, base_commit, push, continuing, settings,
                local=ready.refs[local_ref], remote=ready.refs[remote_ref],
                owner=ready.config.get(f"branch.{branch}.runnerjob", ""))
            taken = False
            if own_clone:
                git("update-ref", "--", f"refs/heads/{branch}", start, cwd=mirror, settings=settings)
            elif early is not None and early.finish(settings, mirror, branch, start):
                taken = True
            else:
                # A checkout made in advance (runner/spare.py), else git writes every file.
                taken = spare.take(settings, mirror, work, branch, start)
                if not taken:
                    _add_worktree(mirror, branch, work, start, settings)
            _record_branch(mirror, branch, job_id, ready.config, settings)
        except BaseException as exc:
            for taken_one in taken_early:  # its tree goes; the job's next attempt starts anew
                taken_one.abandon()
            if isinstance(exc, GitFailed):
                raise RepositoryUnavailable(f"could not create the worktree: {exc.tail()}") from exc
            raise
    log.info("worktree_created", cache=action, mirror=mirror.name, branch=branch, spare=taken,
             base=base_ref or "HEAD", base_commit=base_commit,
             continued_from=start if start != base_commit else None)
    ws = Workspace(job_dir=job_dir, path=work, mirror=mirror, branch=branch,
                   base_commit=base_commit, url=url, start_commit=start, clone=own_clone)
    # Check out outside the lock; git never writes through a symlink in the tree.
    try:
        if own_clone:
            clone.create(ws, settings)
        elif taken:
            if early is None or not early.cleaned:  # (a clean one was checked while fetching)
                spare.clean(work, settings)
        else:
            git("reset", "-q", "--hard", cwd=work, settings=settings)
    except BaseException:
        # A partial checkout holds nothing of an agent's, only disk space (a full disk).
        remove_tree(work)
        raise
    escaping = inputs.escaping_symlinks(work)
    if escaping:
        raise UnsafeRepository("the repository contains symlinks that point outside its "
                               "worktree, which the runner refuses: " + "; ".join(escaping))
    if own_clone:
        clone.hand_to_agent(ws, settings.agent)
    return ws


def _base_candidates(base_ref: str | None) -> tuple[str, ...]:
    """What the base may name, in the order tried: a remote branch, a tag, a commit."""
    if base_ref is None:
        return ("refs/remotes/origin/HEAD^{commit}",)
    candidates = [f"refs/remotes/origin/{base_ref}^{{commit}}", f"refs/tags/{base_ref}^{{commit}}"]
    if re.fullmatch(r"[0-9a-f]{7,40}", base_ref):
        candidates.append(f"{base_ref}^{{commit}}")
    return tuple(candidates)


def _resolve_base(ready: repo_cache.Mirror, candidates: tuple[str, ...], base_ref: str | None,
                  url: str) -> str:
    for name in candidates:
        if ready.refs.get(name):
            return ready.refs[name]  # type: ignore[return-value]
    raise InvalidRef(f"base_ref {base_ref or 'HEAD'!r} is not a branch, tag or commit of "
                     f"{inputs.display_url(url)}")


def _record_branch(mirror: Path, branch: str, job_id: str, config: dict[str, str],
                   settings: Settings) -> None:
    """``branch.<name>.runnerjob`` (which job made it: a retry may reset it) and
    ``.runnercreated`` (its age, for the sweep), as one section appended to the mirror's
    config, not two ``git config`` processes on the path to the agent's start. Under the
    mirror lock; a section an earlier job left is removed first (one process, then only).
    The branch's characters (inputs.check_ref) need no quoting in a subsection name."""
    path = mirror / "config"
    if f"branch.{branch}.runnerjob" in config or f"branch.{branch}.runnercreated" in config:
        git("config", "--file", str(path), "--remove-section", "--", f"branch.{branch}",
            check=False)
    assert inputs.branch_name_ok(branch) and '"' not in branch and "\\" not in branch
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb+") as f:
        f.seek(0, os.SEEK_END)
        newline = b""
        if f.tell():
            f.seek(-1, os.SEEK_END)
            newline = b"" if f.read(1) == b"\n" else b"\n"
        f.write(newline + (f'[branch "{branch}"]\n\trunnerjob = {job_id}\n'
                           f"\trunnercreated = {int(time.time())}\n").encode())


# What a previous attempt leaves in the job directory that the next one keeps: the
# agent's HOME (Claude's session files, for --resume) and patches of kept leftovers.
_KEPT_ACROSS_ATTEMPTS = ("home",)


def _clear_previous_attempt(job_dir: Path) -> None:
    """Remove what a previous attempt of this job left, but its agent's HOME and patches.

    Its worktree's changes are on the branch already (committed by the runner at its end,
    or by runner.leftovers.rescue_previous after a crash), so ``work/`` goes."""
    if job_dir.is_symlink() or (job_dir.exists() and not job_dir.is_dir()):
        remove_tree(job_dir)
        return
    if not job_dir.exists():
        return
    for entry in job_dir.iterdir():
        if entry.name in _KEPT_ACROSS_ATTEMPTS and entry.is_dir() and not entry.is_symlink():
            continue
        if (entry.name.endswith(".patch") or entry.name == KEPT_WORK) and entry.is_file() \
                and not entry.is_symlink():
            continue
        remove_tree(entry)


def _claim_branch(mirror: Path, branch: str, job_id: str, base: str, push: bool,
                  continuing: bool, settings: Settings, *, local: str | None,
                  remote: str | None, owner: str) -> tuple[str, str]:
    """Check the branch may be used; return the commit the worktree starts from, and the
    base this job's own commits count from (an earlier job's head on a shared branch).
    ``local``/``remote``: the branch's commit in the mirror and on the remote (None: no
    such branch); ``owner``: the job that made it (branch.<name>.runnerjob)."""
    start = base
    if local is not None:
        user = _worktree_of(mirror, branch, settings)
        if user is not None:
            raise BranchConflict(f"branch {branch!r} is checked out in another job's worktree "
                                 f"({user}); choose another branch")
        extra = _count(mirror, f"{base}..{local}", settings)
        if owner == job_id and continuing:
            # An earlier attempt's work (its commits and the runner's leftover commit) is
            # where this one goes on.
            start = local
            log.info("branch_continued_from_previous_attempt", branch=branch, commits=extra)
        elif owner == job_id:
            log.info("branch_reset_previous_attempt", branch=branch, discarded_commits=extra)
        elif extra and owner:
            # An earlier job's work on this branch: the next job on the branch builds on it
            # (an implement step, then a review or fix-up step), never throws it away.
            log.info("branch_continued_from_earlier_job", branch=branch, earlier_job=owner,
                     commits=extra)
            start = base = local
        elif extra:
            raise BranchConflict(
                f"branch {branch!r} already exists in the runner's cache with {extra} "
                f"commit(s) the base lacks, made by something other than the runner; choose "
                f"another branch, or push that work and give its branch as base_ref to build on it")
    if push and remote is not None and _count(mirror, f"{base}..{remote}", settings):
        raise BranchConflict(
            f"branch {branch!r} already exists on the remote with commits the base lacks, so "
            f"the push would be rejected; choose another branch or set base_ref to {branch!r}")
    return start, base



def _count(mirror: Path, spec: str, settings: Settings) -> int:
    out = git("rev-list", "--count", "--end-of-options", spec, cwd=mirror, settings=settings)
    return int(out.stdout.strip() or 0)


def _add_worktree(mirror: Path, branch: str, work: Path, start: str, settings: Settings) -> None:
    argv = ("worktree", "add", "--no-checkout", "-B", branch, "--", str(work), start)
    try:
        git(*argv, cwd=mirror, settings=settings)
    except GitFailed:
        # A registration left by a worktree removed behind git's back (a retried job's own
        # path, or its branch): prune, then once more; a second failure is the real one.
        git("worktree", "prune", cwd=mirror, settings=settings)
        git(*argv, cwd=mirror, settings=settings)


def _worktree_of(mirror: Path, branch: str, settings: Settings) -> str | None:
    out = git("worktree", "list", "--porcelain", cwd=mirror, settings=settings).stdout
    path = None
    for line in out.splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree "):]
        elif line == f"branch refs/heads/{branch}" and path and Path(path).exists():
            return path
    return None


# -- what the agent did ----------------------------------------------------------------

def commits(ws: Workspace, settings: Settings | None = None) -> dict[str, Any]:
    """The commits on the job's branch since the base: count, list, diffstat.

    Read from the mirror's ref, never through the worktree (which the agent controls).
    """
    empty: dict[str, Any] = {"count": 0, "list": [], "diffstat": None}
    if ws.base_commit is None or ws.mirror is None or ws.branch is None:
        return empty
    head = rev(ws.mirror, f"refs/heads/{ws.branch}", settings)  # type: ignore[arg-type]
    if head is None:
        return {**empty, "error": f"branch {ws.branch!r} no longer exists"}
    spec = f"{ws.base_commit}..{head}"
    flags = ("--no-ext-diff", "--no-textconv")
    count = _count(ws.mirror, spec, settings)  # type: ignore[arg-type]
    out = git("log", f"--max-count={MAX_LISTED}", "--format=%H%x09%ae%x09%s", "--end-of-options",
              spec, cwd=ws.mirror, settings=settings).stdout
    listed = []
    for line in out.splitlines():
        sha, email, subject = (line.split("\t", 2) + ["", ""])[:3]
        entry = {"sha": sha, "subject": subject}
        if subject == LEFTOVER_SUBJECT and settings is not None \
                and email == settings.leftover_author_email:
            entry["by"] = "runner"  # the runner's commit of what the agent left uncommitted
        listed.append(entry)
    short = git("diff", "--shortstat", *flags, ws.base_commit, head, cwd=ws.mirror,
                settings=settings).stdout.strip()
    numstat = git("diff", "--numstat", *flags, ws.base_commit, head, cwd=ws.mirror,
                  settings=settings).stdout.splitlines()
    files = []
    for line in numstat[:MAX_LISTED]:
        added, deleted, path = (line.split("\t", 2) + ["", ""])[:3]
        files.append({"path": path, "added": _int(added), "deleted": _int(deleted)})
    nums = {k: int(m.group(1)) if (m := re.search(rf"(\d+) {k}", short)) else 0
            for k in ("file", "insertion", "deletion")}
    return {"count": count, "list": listed, "head": head, "base": ws.base_commit,
            "branch": ws.branch,
            "diffstat": {"summary": short, "files_changed": nums["file"],
                         "insertions": nums["insertion"], "deletions": nums["deletion"],
                         "files": files, "files_truncated": len(numstat) > MAX_LISTED}}


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None  # '-' for binary files


# -- removal and the sweep -------------------------------------------------------------

def holds_kept_work(ws: Workspace) -> bool:
    """True when the job directory holds work that is not on the job's branch."""
    return (ws.job_dir / KEPT_WORK).is_file()


def remove(ws: Workspace, settings: Settings | None = None, *, keep_home: bool = False) -> None:
    """Remove the job directory and its worktree registration (the branch stays); with
    ``keep_home`` the agent's HOME stays (its session files, for a job that continues this one)."""
    if keep_home and ws.job_dir.is_dir() and not ws.job_dir.is_symlink():
        for entry in ws.job_dir.iterdir():
            if entry.name != "home" or entry.is_symlink():
                remove_tree(entry)
    else:
        remove_tree(ws.job_dir)
    if ws.mirror is not None and settings is not None and (ws.mirror / "HEAD").exists():
        try:
            with repo_cache.locked(ws.mirror, settings):
                git("worktree", "prune", cwd=ws.mirror, settings=settings, check=False)
        except Exception as exc:  # the sweep prunes later
            log.warning("worktree_prune_failed", mirror=ws.mirror.name, error=str(exc))

