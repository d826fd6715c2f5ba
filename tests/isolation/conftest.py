"""The isolation tests run the project's code as other, unprivileged users: the checkout
and its .venv must be reachable by them (no folder on the way closed to others)."""

from pathlib import Path

import pytest

from tests.conftest import REPO


def _reachable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def pytest_collection_modifyitems(items):
    if _reachable_by_others(Path(REPO).resolve()):
        return
    skip = pytest.mark.skip(reason=f"{REPO} sits in a folder other users cannot enter; "
                                   "clone the project elsewhere (e.g. /srv or /tmp) to run it")
    for item in items:
        if "tests/isolation/" in str(item.fspath):
            item.add_marker(skip)
