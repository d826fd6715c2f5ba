"""Helpers for the adapter tests: settings without a database, a RunContext, fixtures."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from runner import jobconfig
from runner.agents.base import RunContext, RunOutput, StreamReader
from runner.outcome import EarlyStop, Outcome
from runner.settings import Settings, load_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("RUNNER_ALLOWED_PERMISSION_MODES", "RUNNER_CLAUDE_CREDENTIAL",
                 "RUNNER_MCP_CONFIG_DIR", "RUNNER_AGENT_RULES_FILE"):
        monkeypatch.delenv(name, raising=False)
    rules = tmp_path / "CLAUDE.md"
    rules.write_text("# Agent rules\nRULES-MARKER-7f3a: never push to main.\n")

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": "postgresql://x@127.0.0.1/none",
                                  "job_root": tmp_path / "jobs", "agent_rules_file": rules}
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def make_ctx(tmp_path: Path):
    def make(settings: Settings, config: dict[str, Any], prompt: str = "Fix the bug.") -> RunContext:
        job_id = uuid.uuid4()
        job_dir = settings.job_root / str(job_id)
        (job_dir / "work").mkdir(parents=True, exist_ok=True)
        return RunContext(job={"id": job_id}, config=jobconfig.parse(config, settings.default_agent),
                          settings=settings,
                          workdir=job_dir / "work", job_dir=job_dir,
                          payload_path=job_dir / "payload.json", prompt=prompt)

    return make


def replay(reader: StreamReader, lines: list[str], exit_code: int | None = 0,
           stderr: list[str] | None = None) -> tuple[Outcome, bool]:
    """Feed a captured stream as run_agent would; (outcome, stopped early)."""
    for line in lines:
        try:
            reader.feed("stdout", line)
        except EarlyStop as stop:
            return stop.outcome, True
    for line in stderr or []:
        reader.feed("stderr", line)
    return reader.outcome(RunOutput(exit_code, list(stderr or []))), False


def capture(agent: str, case: str) -> tuple[list[str], list[str]]:
    """stdout lines and stderr lines of a captured run under tests/fixtures/<agent>/."""
    base = FIXTURES / agent
    out = (base / f"{case}.stdout.jsonl").read_text().splitlines()
    err_path = base / f"{case}.stderr.txt"
    err = err_path.read_text().splitlines() if err_path.exists() else []
    return out, err
