"""bin/demo and bin/test work offline once .venv exists: ensure_venv under a network namespace
with no interfaces up (`unshare -n`) succeeds, with and without a reinstall."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[1]
VENV = TOP / ".venv"


def _ensure(extras: str, *, offline: bool) -> subprocess.CompletedProcess:
    script = f'source bin/lib/venv.sh && ensure_venv {extras} && echo "VENV_PY=$VENV_PY"'
    argv = ["bash", "-c", script]
    if offline:
        argv = ["unshare", "-n", *argv]
    return subprocess.run(argv, cwd=TOP, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed():
    if Path(sys.prefix).resolve() != VENV.resolve():
        pytest.skip("the tests do not run from this checkout's .venv")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    first = _ensure("test", offline=False)  # the first install (a no-op when already done)
    assert first.returncode == 0, first.stderr


def test_ensure_venv_skips_pip_offline_when_nothing_changed(installed):
    done = _ensure("test", offline=True)
    assert done.returncode == 0, done.stderr
    assert f"VENV_PY={VENV}/bin/python" in done.stdout


def test_reinstall_offline_builds_without_isolation(installed):
    # A changed dependency set (here: a stamp that no longer matches) makes pip run; with the
    # build backend already in the venv it needs nothing from the index.
    stamp = VENV / ".runner-install-demo"
    stamp.write_text("stale\n")
    done = _ensure("demo", offline=True)
    assert done.returncode == 0, done.stderr
    assert stamp.read_text().strip() != "stale"
    again = _ensure("demo", offline=True)
    assert again.returncode == 0 and "pip" not in again.stderr.lower(), again.stderr
