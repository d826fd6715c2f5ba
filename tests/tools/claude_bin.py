"""Locate the real Claude Code CLI binary for tests (see install_claude.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / ".tools" / "claude"
INSTALLER = Path(__file__).resolve().parent / "install_claude.sh"
ENV_VAR = "RUNNER_TEST_CLAUDE_BIN"


def _is_executable_file(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def _is_native(p: Path) -> bool:
    try:
        with p.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def claude_bin() -> Path | None:
    """The Claude Code binary to test against, or None if there is none.

    RUNNER_TEST_CLAUDE_BIN wins when set (it must name an executable file); otherwise the
    copy installed by tests/tools/install_claude.sh under <repo>/.tools/claude.
    """
    named = os.environ.get(ENV_VAR)
    if named:
        p = Path(named).expanduser()
        return p if _is_executable_file(p) else None
    wrapper = TOOLS_DIR / "node_modules" / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
    if _is_executable_file(wrapper) and _is_native(wrapper):
        return wrapper
    for cand in sorted((TOOLS_DIR / "node_modules" / "@anthropic-ai").glob("claude-code-*/claude")):
        if _is_executable_file(cand) and _is_native(cand):
            return cand
    return None


def install_claude() -> Path:
    """Run the installer (npm registry only) and return the binary path it prints."""
    out = subprocess.run(
        ["bash", str(INSTALLER)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def claude_version(binary: Path) -> str:
    """`claude --version` → e.g. "2.1.329"."""
    out = subprocess.run(
        [str(binary), "--version"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        timeout=60,
        env={**os.environ, "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
    ).stdout
    return out.split()[0] if out.split() else ""
