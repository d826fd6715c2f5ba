"""Fixtures for the bin/ tests (helpers live in run_agent_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # whatever pytest's import mode

from run_agent_harness import Supervisor  # noqa: E402


@pytest.fixture
def sup(tmp_path):
    """A supervisor under test in tmp_path; killed (whole session) at the end."""
    s = Supervisor(tmp_path)
    yield s
    s.kill()
