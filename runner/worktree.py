"""The job's working directory: a git worktree from a per-repository mirror cache.

Layout under ``RUNNER_JOB_ROOT/<job id>/``: ``payload.json`` (written by the iteration)
and ``work/`` — the worktree the agent runs in, or an empty directory for a job without
a repository. Keeping the payload outside ``work/`` means the agent cannot commit it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runner.errors import InvalidRef, InvalidRepository, RepositoryUnavailable
from runner.settings import Settings


@dataclass
class Workspace:
    job_dir: Path
    path: Path  # where the agent runs
    mirror: Path | None = None
    branch: str | None = None
    base_commit: str | None = None


def git(*args: str, cwd: Path | None = None, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run git without prompts; job values must come after ``--`` in ``args``."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "PATH": _path(),
           "HOME": str(Path.home()), "LC_ALL": "C"}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def _path() -> str:
    import os
    return os.environ.get("PATH", "/usr/bin:/bin")


def check_repo_url(url: str, settings: Settings) -> None:
    """Accept https/ssh URLs on allowed hosts (file:// only when the operator allows it)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRepository("repo_url is empty")
    if len(url) > 2048 or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidRepository("repo_url contains spaces or control characters, or is too long")
    if url.startswith("-"):
        raise InvalidRepository(f"repo_url must not start with '-': {url[:80]!r}")
    if "::" in url.split("/")[0]:
        raise InvalidRepository(f"repo_url uses a git remote helper transport, which is not allowed: {url[:80]!r}")
    parts = urlsplit(url)
    if parts.scheme == "file":
        if not settings.allow_file_repos:
            raise InvalidRepository("file:// repositories are not allowed (set RUNNER_ALLOW_FILE_REPOS=1 to allow them)")
        return
    if parts.scheme not in ("https", "ssh"):
        raise InvalidRepository(
            f"repo_url must be an https:// or ssh:// URL, got {url[:80]!r}"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidRepository(f"repo_url has no host: {url[:80]!r}")
    if host not in {h.lower() for h in settings.allowed_repo_hosts}:
        raise InvalidRepository(
            f"repository host {host!r} is not in RUNNER_ALLOWED_REPO_HOSTS "
            f"({', '.join(settings.allowed_repo_hosts) or 'empty'})"
        )


def check_ref(name: str, what: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 200 or name.startswith("-"):
        raise InvalidRef(f"{what} {str(name)[:80]!r} is not a valid branch name")
    proc = git("check-ref-format", "--branch", name, check=False)
    if proc.returncode != 0:
        raise InvalidRef(f"{what} {name[:80]!r} is not a valid branch name (git check-ref-format)")
    return name


def mirror_dir(cache_dir: Path, url: str) -> Path:
    """A safe, stable directory name for the URL's mirror: readable tail + hash."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/").rsplit("/", 1)[-1])[:40].strip(".-")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir / f"{tail or 'repo'}-{digest}.git"


def ensure_mirror(url: str, settings: Settings) -> Path:
    mirror = mirror_dir(settings.cache_dir, url)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        if (mirror / "HEAD").exists():
            git("remote", "update", "--prune", cwd=mirror)
        else:
            tmp = mirror.with_suffix(".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            git("clone", "--mirror", "--", url, str(tmp))
            tmp.rename(mirror)
    except subprocess.CalledProcessError as exc:
        raise RepositoryUnavailable(
            f"could not clone or fetch {url}: {_git_error(exc)}"
        ) from exc
    return mirror


def _git_error(exc: subprocess.CalledProcessError) -> str:
    lines = [l for l in (exc.stderr or "").splitlines() if l.strip()]
    return (lines[-1] if lines else f"git exited {exc.returncode}")[:300]


def prepare(job: dict[str, Any], settings: Settings) -> Workspace:
    """Create the job directory and, for a job with a repository, its worktree."""
    job_dir = settings.job_root / str(job["id"])
    work = job_dir / "work"
    if job_dir.exists():  # a previous attempt of this job left it behind
        remove(Workspace(job_dir=job_dir, path=work, mirror=_mirror_of(job, settings)))
    job_dir.mkdir(parents=True)
    url = job.get("repo_url")
    if not url:
        work.mkdir()
        return Workspace(job_dir=job_dir, path=work)
    check_repo_url(url, settings)
    branch = check_ref(job.get("branch") or f"runner/{str(job['id'])[:8]}", "branch")
    base_ref = job.get("base_ref")
    if base_ref:
        check_ref(base_ref, "base_ref")
    mirror = ensure_mirror(url, settings)
    base = base_ref or "HEAD"
    try:
        base_commit = git("rev-parse", "--verify", "--end-of-options", f"{base}^{{commit}}",
                          cwd=mirror).stdout.strip()
    except subprocess.CalledProcessError as exc:
        raise InvalidRef(f"base_ref {base!r} does not exist in {url}") from exc
    try:
        # -B: a branch left by an earlier attempt of this job is reset to the base.
        git("worktree", "add", "-B", branch, str(work), base_commit, cwd=mirror)
    except subprocess.CalledProcessError as exc:
        raise RepositoryUnavailable(f"could not create the worktree: {_git_error(exc)}") from exc
    git("config", "user.name", settings.git_user_name, cwd=work)
    git("config", "user.email", settings.git_user_email, cwd=work)
    return Workspace(job_dir=job_dir, path=work, mirror=mirror, branch=branch,
                     base_commit=base_commit)


def _mirror_of(job: dict[str, Any], settings: Settings) -> Path | None:
    url = job.get("repo_url")
    return mirror_dir(settings.cache_dir, url) if isinstance(url, str) and url else None


def commits(ws: Workspace) -> list[dict[str, str]]:
    """The commits the agent made on top of the base."""
    if ws.base_commit is None:
        return []
    out = git("log", "--format=%H%x09%s", f"{ws.base_commit}..HEAD", cwd=ws.path,
              check=False).stdout
    return [dict(zip(("sha", "subject"), line.split("\t", 1))) for line in out.splitlines() if line]


def remove(ws: Workspace) -> None:
    """Remove the job directory and its worktree registration."""
    if ws.mirror is not None and (ws.mirror / "HEAD").exists():
        git("worktree", "remove", "--force", str(ws.path), cwd=ws.mirror, check=False)
        git("worktree", "prune", cwd=ws.mirror, check=False)
    shutil.rmtree(ws.job_dir, ignore_errors=True)
