"""A job directory holding folders its agent made unreadable (mode 000) is still removed
whole by its owner: rmtree's open() failing must open the folder up, not crash cleanup."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root (to act as a plain user) and setpriv")

SCRIPT = """
import os, sys
from pathlib import Path
from runner.workspace import remove_tree
d = Path(sys.argv[1])
(d / "work" / "locked").mkdir(parents=True)
(d / "work" / "locked" / "file").write_text("x")
os.chmod(d / "work" / "locked", 0)
os.chmod(d / "work", 0o500)
remove_tree(d)
print("removed" if not d.exists() else "still there")
"""


def test_unreadable_folders_do_not_stop_removal():
    base = Path(tempfile.mkdtemp(prefix="rm-"))
    os.chmod(base, 0o777)
    site = next((Path(REPO) / ".venv" / "lib").glob("python3*/site-packages"))
    try:
        proc = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
             "-c", SCRIPT, str(base / "job")],
            env={"PYTHONPATH": f"{REPO}:{site}", "PATH": os.environ["PATH"]}, cwd="/",
            capture_output=True, text=True, timeout=60)
        assert proc.stdout.strip() == "removed", proc.stdout + proc.stderr
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)
