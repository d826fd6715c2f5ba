"""A git repository's files read without a git process, for the questions asked before
every job's agent starts (runner/repo_cache.py): each function answers only when the
files say it plainly, and None/False means "ask git" — never a different answer from
git's (tests/test_repo_cache.py compares them).
"""

from __future__ import annotations

import mmap
import re
import zlib
from pathlib import Path

SHA1 = re.compile(r"[0-9a-f]{40}")  # a full object name (SHA-1)


class Unsure(Exception):
    """The files do not say it plainly: ask git."""


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
        sha = _ref_value(repo, "refs/remotes/origin/HEAD", _packed_refs(repo))
        if sha is None:
            return False
        if (repo / "objects" / sha[:2] / sha[2:]).is_file():
            return True
        raw = bytes.fromhex(sha)
        return any(idx.with_suffix(".pack").is_file() and _in_pack_index(idx, raw)
                   for idx in (repo / "objects" / "pack").glob("pack-*.idx"))
    except (Unsure, OSError, ValueError):
        return False


def _in_pack_index(idx: Path, sha: bytes) -> bool:
    """Whether a version-2 pack index lists the object (``_position``)."""
    with idx.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:8] != b"\xfftOc\x00\x00\x00\x02":
            return False
        return _position(m, sha) is not None


def commits_of(repo: Path, names: tuple[str, ...]) -> dict[str, str | None]:
    """What ``git cat-file --batch-check`` answers for names of the form
    ``refs/...^{commit}``: the commit each leads to, or None when the ref does not exist.
    Raises Unsure for anything else — a name of another form, a ref that leads to a tag
    object or to an object the files do not show plainly as a commit (delta, large pack
    offset, alternates), a reftable repository — and the caller asks git."""
    if (repo / "reftable").exists() or (repo / "objects" / "info" / "alternates").exists():
        raise Unsure("not plain files")
    packed = _packed_refs(repo)
    packs = sorted((repo / "objects" / "pack").glob("pack-*.idx"))
    found: dict[str, str | None] = {}
    for name in names:
        ref = name.removesuffix("^{commit}")
        if ref == name:
            raise Unsure(name)
        sha = _ref_value(repo, ref, packed)
        if sha is not None and _object_type(repo, sha, packs) != b"commit":
            raise Unsure(name)
        found[name] = sha
    return found


def _packed_refs(repo: Path) -> dict[str, str] | None:
    try:
        text = (repo / "packed-refs").read_text(encoding="ascii")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError):
        return None
    refs = {}
    for line in text.splitlines():
        if line.startswith(("#", "^")):
            continue
        sha, _, ref = line.partition(" ")
        if not SHA1.fullmatch(sha):
            return None
        refs[ref] = sha
    return refs


def _ref_value(repo: Path, ref: str, packed: dict[str, str] | None, depth: int = 0) -> str | None:
    """The object a ref names, following a symbolic ref once; None when it does not exist."""
    if not ref.startswith("refs/") or ".." in ref or "//" in ref:
        raise Unsure(ref)
    path = repo / ref
    if path.is_symlink():
        raise Unsure(ref)
    if path.is_file():
        value = path.read_text(encoding="ascii").strip()
        if value.startswith("ref: ") and depth == 0:
            return _ref_value(repo, value[len("ref: "):], packed, 1)
        if not SHA1.fullmatch(value):
            raise Unsure(ref)
        return value
    if packed is None:
        raise Unsure("packed-refs")
    return packed.get(ref)


_PACK_TYPES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}


def _object_type(repo: Path, sha: str, packs: list[Path]) -> bytes:
    """The object's type from its loose header or its pack entry; Unsure otherwise."""
    loose = repo / "objects" / sha[:2] / sha[2:]
    if loose.is_file():
        with loose.open("rb") as fh:
            head = zlib.decompressobj().decompress(fh.read(64), 32)
        kind, space, _ = head.partition(b" ")
        if not space:
            raise Unsure(sha)
        return kind
    raw = bytes.fromhex(sha)
    for idx in packs:
        offset = _pack_offset(idx, raw)
        if offset is None:
            continue
        with idx.with_suffix(".pack").open("rb") as fh:
            fh.seek(offset)
            kind = _PACK_TYPES.get((fh.read(1)[0] >> 4) & 7)
        if kind is None:  # a delta: its type is its base's
            raise Unsure(sha)
        return kind
    raise Unsure(sha)


def _pack_offset(idx: Path, sha: bytes) -> int | None:
    """The object's offset in the pack of a version-2 index, None when it is not listed;
    Unsure for an offset in the large-offset table."""
    with idx.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:8] != b"\xfftOc\x00\x00\x00\x02":
            raise Unsure(str(idx))
        fanout = 8
        count = int.from_bytes(m[fanout + 4 * 255:fanout + 4 * 256], "big")
        position = _position(m, sha)
        if position is None:
            return None
        offsets = fanout + 256 * 4 + count * 24  # after the names and the CRCs
        offset = int.from_bytes(m[offsets + 4 * position:offsets + 4 * position + 4], "big")
        if offset & 0x80000000:
            raise Unsure(str(idx))
        return offset


def _position(m: mmap.mmap, sha: bytes) -> int | None:
    """Where a version-2 pack index lists the object: the fan-out table gives the range of
    names with its first byte, a binary search the rest (gitformat-pack(5))."""
    fanout = 8
    lo = int.from_bytes(m[fanout + 4 * (sha[0] - 1):fanout + 4 * sha[0]], "big") if sha[0] else 0
    hi = int.from_bytes(m[fanout + 4 * sha[0]:fanout + 4 * sha[0] + 4], "big")
    names = fanout + 256 * 4
    while lo < hi:
        mid = (lo + hi) // 2
        got = m[names + 20 * mid:names + 20 * mid + 20]
        if got == sha:
            return mid
        if got < sha:
            lo = mid + 1
        else:
            hi = mid
    return None
