"""At iteration start: remove what no job needs any more, so disk use stays bounded.

* ``<job root>/<uuid>`` directories whose job is not claimed/running/queued (a queued
  job's next attempt continues from its directory: the agent's session files): a
  succeeded or deleted job's at once; a failed, blocked or cancelled job's — and a
  succeeded one's that holds work its branch lacks (``leftovers.json``: a patch, big
  files) — once it finished more than RUNNER_KEEP_FAILED_HOURS ago (a blocked job's
  not before RUNNER_BLOCKED_EXPIRE_HOURS either); a succeeded job's not while a
  not-finished job continues from it (config.continue_from: its session files);
* spare worktrees no longer wanted (runner/spare.py: a dead maker's ``.making-*``, broken,
  too many, a day old, or their mirror gone);
* every mirror's stale worktree registrations (``git worktree prune``);
* job branches the runner made (``branch.<name>.runnercreated``) that no worktree uses
  and that are older than RUNNER_KEEP_BRANCH_HOURS.

A mirror whose lock another worker holds is skipped until the next iteration. The sweep
never fails the iteration: whatever goes wrong is logged and left for next time.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from runner import repo_cache, spare, staging
from runner.contract import KEPT_FOR_INSPECTION
from runner.gitcmd import git
from runner.queue import Queue
from runner.settings import Settings
from runner.workspace import KEPT_WORK, remove_tree

log = structlog.get_logger("runner.sweep")

# A live claim, or a job whose next attempt continues from its directory.
ACTIVE = ("claimed", "running", "queued")
KEPT = tuple(s.value for s in KEPT_FOR_INSPECTION)
STALE_STAGING_SECONDS = 7 * 24 * 3600


def sweep(queue: Queue, settings: Settings) -> dict[str, list[str]]:
    done: dict[str, list[str]] = {"job_dirs": [], "branches": [], "spares": []}
    try:
        done["job_dirs"] = sweep_job_root(queue, settings)
        done["branches"] = sweep_mirrors(settings, done["spares"])
    except Exception as exc:  # noqa: BLE001 - housekeeping must not stop the worker
        log.warning("sweep_failed", error=str(exc))
    return done


def sweep_job_root(queue: Queue, settings: Settings) -> list[str]:
    root = settings.job_root
    if not root.is_dir():
        return []
    removed = []
    keep_seconds = settings.keep_failed_hours * 3600
    mine = staging.next_job_dir(settings).name
    for path in sorted(root.iterdir()):
        if path.name.startswith(staging.STAGED_PREFIX) and path.name != mine:
            _drop_stale_staging(path)
            continue
        try:
            job_id = str(uuid.UUID(path.name))
        except ValueError:
            continue  # not ours
        row = queue.get(job_id)
        status = row["status"] if row else None
        if status in ACTIVE:
            continue
        kept = status in KEPT or (status == "succeeded" and (path / KEPT_WORK).is_file())
        # A question waits for its answer with the session files it will resume.
        keep = max(keep_seconds, settings.blocked_expire_hours * 3600) if status == "blocked" \
            else keep_seconds
        if kept and _age(row, path) < keep:
            continue
        if status == "succeeded" and queue.continued_by(job_id):
            continue  # a job that continues this one will copy its session (continue_from)
        remove_tree(path)
        removed.append(job_id)
        log.info("job_dir_removed", job_id=job_id, status=status or "no such job")
    return removed


def _drop_stale_staging(path: Path) -> None:
    """Another worker's staged next job directory (runner/staging.py) that it has not
    touched for STALE_STAGING_SECONDS: that worker is gone (a new id, a removed container).
    Were it only idle, it makes the directory again at its next wait."""
    try:
        if time.time() - path.lstat().st_mtime > STALE_STAGING_SECONDS:
            remove_tree(path)
            log.info("staged_dir_removed", path=path.name)
    except OSError:
        pass


def _age(row: dict[str, Any] | None, path: Path) -> float:
    finished = row.get("finished_at") if row else None
    if isinstance(finished, datetime):
        return (datetime.now(timezone.utc) - finished).total_seconds()
    return time.time() - path.lstat().st_mtime


def sweep_mirrors(settings: Settings, spares: list[str] | None = None) -> list[str]:
    """Each mirror's spares, registrations and old branches; ``spares`` gets the names of
    the spare worktrees removed (runner/spare.py)."""
    deleted: list[str] = []
    removed = spares if spares is not None else []
    mirrors = repo_cache.mirrors(settings.cache_dir)
    removed += spare.sweep_orphans(settings, mirrors)
    for mirror in mirrors:
        with repo_cache.locked(mirror, settings, wait=False) as got:
            if not got or not (mirror / "HEAD").is_file():
                continue
            removed += spare.sweep(settings, mirror)  # before the prune: it drops their registrations
            git("worktree", "prune", cwd=mirror, settings=settings, check=False)
            deleted += _old_branches(mirror, settings)
    return deleted


def _old_branches(mirror: Path, settings: Settings) -> list[str]:
    config = str(mirror / "config")
    out = git("config", "--file", config, "--get-regexp", r"^branch\..*\.runnercreated$",
              check=False).stdout
    in_use = {line[len("branch refs/heads/"):] for line in
              git("worktree", "list", "--porcelain", cwd=mirror, settings=settings).stdout.splitlines()
              if line.startswith("branch refs/heads/")}
    cutoff = time.time() - settings.keep_branch_hours * 3600
    deleted = []
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        branch = key[len("branch."):-len(".runnercreated")]
        if branch in in_use or not value.isdigit() or int(value) > cutoff:
            continue
        git("branch", "-q", "-D", "--", branch, cwd=mirror, settings=settings, check=False)
        git("config", "--file", config, "--remove-section", "--", f"branch.{branch}", check=False)
        deleted.append(branch)
        log.info("job_branch_removed", mirror=mirror.name, branch=branch)
    return deleted
