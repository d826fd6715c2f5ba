"""Run the real Claude Code CLI headless the way a worker does (tests and fixture capture)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

FAKE_API_KEY = "sk-ant-api03-fake-key-for-loopback-tests-only"
# A fake subscription (claude.ai) token: with it, instead of an API key, the CLI reads the
# anthropic-ratelimit-unified-* headers and reports usage limits.
FAKE_OAUTH_TOKEN = "sk-ant-oat01-fake-oauth-token-for-loopback-tests-only"
DEFAULT_MODEL = "claude-sonnet-4-5"


def claude_argv(binary: Path | str, prompt: str, *, model: str = DEFAULT_MODEL,
                permission_mode: str = "acceptEdits",
                allowed_tools: Sequence[str] = (), max_turns: int | None = None,
                extra: Sequence[str] = ()) -> list[str]:
    argv = [str(binary), "-p", prompt, "--output-format", "stream-json", "--verbose",
            "--model", model, "--permission-mode", permission_mode]
    if allowed_tools:
        argv += ["--allowedTools", ",".join(allowed_tools)]
    if max_turns is not None:
        argv += ["--max-turns", str(max_turns)]
    return argv + list(extra)


def claude_env(home: Path | str, base_url: str, *, api_key: str = FAKE_API_KEY,
               oauth_token: str | None = None, max_retries: int | None = None,
               **extra: str) -> dict[str, str]:
    """A minimal allowlisted environment: nothing from the caller but PATH/LANG.

    With ``oauth_token`` the CLI authenticates as a subscription user
    (CLAUDE_CODE_OAUTH_TOKEN) and no ANTHROPIC_API_KEY is set.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    if oauth_token:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = oauth_token
    else:
        env["ANTHROPIC_API_KEY"] = api_key
    if max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    env.update(extra)
    return env


def make_git_repo(path: Path) -> Path:
    """An empty git repository with one commit (the agent's working directory)."""
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=runner-tests", "-c", "user.email=runner-tests@example.invalid",
           "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("fixture repo\n")
    subprocess.run([*git, "-C", str(path), "add", "README.md"], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-q", "-m", "init"], check=True)
    return path
