"""A git repository's files read without a git process, for the questions asked before
every job's agent starts (runner/repo_cache.py): each function answers only when the
files say it plainly, and None/False means "ask git" — never a different answer from
git's (tests/test_repo_cache.py compares them).
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path

_SHA1 = re.compile(r"[0-9a-f]{40}")


# The config file as git and the runner write it: `[section]` or `[section "sub"]`
# headers and `key = value` lines whose value needs no quoting or escaping.
_SECTION = re.compile(r'^\[([A-Za-z0-9-]+)(?: "([A-Za-z0-9._/+-]+)")?\]$')
_ENTRY = re.compile(r"^([A-Za-z][A-Za-z0-9-]*) = ([^\s\"\\#;]+)$")


def plain_config(path: Path) -> list[tuple[str, str]] | None:
    """The entries of a config file in that plain form, read in Python (no git process on
    each job's path); None for anything else (a comment, a quote, an escape, a
    continuation line…), which git itself then reads (_list_config). Keys are spelled as
    ``git config --list`` spells them: section and key lower case, the subsection as is."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    entries: list[tuple[str, str]] = []
    section: str | None = None
    for raw in text.split("\n"):
        line = raw.strip(" \t")
        if not line:
            continue
        if m := _SECTION.match(line):
            section = m[1].lower() + (f".{m[2]}" if m[2] else "")
        elif (m := _ENTRY.match(line)) and section is not None:
            entries.append((f"{section}.{m[1].lower()}", m[2]))
        else:
            return None
    return entries


def origin_head_present(repo: Path) -> bool:
    """True when ``refs/remotes/origin/HEAD`` leads (through a symbolic ref, loose or
    packed) to an object the repository holds, loose or in a pack; False when it does not
    or the files do not say so plainly."""
    try:
        head = (repo / "refs" / "remotes" / "origin" / "HEAD").read_text().strip()
        sha = _ref(repo, head[len("ref: "):]) if head.startswith("ref: ") else head
        if sha is None or not _SHA1.fullmatch(sha):
            return False
        if (repo / "objects" / sha[:2] / sha[2:]).is_file():
            return True
        raw = bytes.fromhex(sha)
        return any(idx.with_suffix(".pack").is_file() and _in_pack_index(idx, raw)
                   for idx in (repo / "objects" / "pack").glob("pack-*.idx"))
    except (OSError, ValueError):
        return False


def _ref(repo: Path, name: str) -> str | None:
    if not name.startswith("refs/") or ".." in name:
        return None
    loose = repo / name
    if loose.is_file():
        value = loose.read_text().strip()
        return value if _SHA1.fullmatch(value) else None
    packed = repo / "packed-refs"
    if not packed.is_file():
        return None
    for line in packed.read_text().splitlines():
        sha, _, ref = line.partition(" ")
        if ref == name and _SHA1.fullmatch(sha):
            return sha
    return None


def _in_pack_index(idx: Path, sha: bytes) -> bool:
    """Whether a version-2 pack index lists the object: the fan-out table gives the range
    of names with its first byte, a binary search the rest (gitformat-pack(5))."""
    with idx.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:8] != b"\xfftOc\x00\x00\x00\x02":
            return False
        fanout = 8
        lo = int.from_bytes(m[fanout + 4 * (sha[0] - 1):fanout + 4 * sha[0]], "big") if sha[0] else 0
        hi = int.from_bytes(m[fanout + 4 * sha[0]:fanout + 4 * sha[0] + 4], "big")
        names = fanout + 256 * 4
        while lo < hi:
            mid = (lo + hi) // 2
            got = m[names + 20 * mid:names + 20 * mid + 20]
            if got == sha:
                return True
            if got < sha:
                lo = mid + 1
            else:
                hi = mid
        return False
