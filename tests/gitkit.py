"""Helpers shared by the git tests: settings without the environment, repo edits."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from runner.settings import load_settings


def settings(tmp_path: Path, **extra: Any):
    values: dict[str, Any] = {
        "database_url": "postgresql://nobody@127.0.0.1:1/none",
        "job_root": tmp_path / "jobs", "cache_dir": tmp_path / "cache",
        "log_dir": tmp_path / "logs", "state_dir": tmp_path / "state",
        "allow_file_repos": True, "git_retry_wait_seconds": 0,
    }
    values.update(extra)
    return load_settings(**values)


def commit(repo: Path, files: dict[str, str], message: str = "change") -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
