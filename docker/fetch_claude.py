"""Fetch the Claude Code CLI from the npm registry without Node.js or npm (image build step).

    python fetch_claude.py VERSION OUT_DIR [native|javascript]

Since 2.1.113 ``@anthropic-ai/claude-code`` is a thin wrapper whose platform package
(``@anthropic-ai/claude-code-linux-x64`` / ``-linux-arm64``) holds one native executable:
that file is all the CLI needs, so it is fetched alone and installed as OUT_DIR/bin/claude.
An older, pure-JavaScript version has no platform package: its package directory goes to
OUT_DIR/claude-code with OUT_DIR/bin/claude linked to its entry point (it then needs Node
at run time: build with INSTALL_NODE=true). ``javascript`` asks for the package even when
a native executable exists (CPUs without AVX2, which the native executable needs).

Every tarball is checked against the sha512 integrity the registry publishes for it.
NPM_REGISTRY overrides the registry (a mirror reachable from behind a firewall).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

REGISTRY = os.environ.get("NPM_REGISTRY") or "https://registry.npmjs.org"
ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as resp:  # noqa: S310 - https registry
        return resp.read()


def manifest(package: str, version: str) -> dict | None:
    """The registry's metadata of one version, or None when it has no such package/version."""
    url = f"{REGISTRY.rstrip('/')}/{package.replace('/', '%2f')}/{version}"
    try:
        return json.loads(get(url))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def tarball(meta: dict) -> tarfile.TarFile:
    data = get(meta["dist"]["tarball"])
    algo, _, want = meta["dist"]["integrity"].partition("-")
    got = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if got != want:
        sys.exit(f"{meta['name']}@{meta['version']}: {algo} of the tarball does not match the registry's")
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")


def main(version: str, out: Path, flavour: str = "native") -> None:
    arch = ARCH.get(platform.machine().lower())
    native = flavour == "native" and arch and manifest(f"@anthropic-ai/claude-code-linux-{arch}", version)
    (out / "bin").mkdir(parents=True, exist_ok=True)
    if native:
        with tarball(native) as tar:
            member = tar.extractfile("package/claude")
            with open(out / "bin" / "claude", "wb") as dst:
                shutil.copyfileobj(member, dst)
        os.chmod(out / "bin" / "claude", 0o755)
        print(f"claude {version}: native executable for linux-{arch}")
        return
    meta = manifest("@anthropic-ai/claude-code", version)
    if meta is None:
        sys.exit(f"@anthropic-ai/claude-code@{version} is not in the registry {REGISTRY}")
    with tarball(meta) as tar:
        # The "data" filter (no links out, no device files) where this Python has it.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(out / "pkg", **safe)
    (out / "pkg" / "package").rename(out / "claude-code")
    (out / "pkg").rmdir()
    entry = meta["bin"]["claude"] if isinstance(meta.get("bin"), dict) else meta["bin"]
    os.symlink(f"../claude-code/{entry}", out / "bin" / "claude")
    print(f"claude {version}: JavaScript package (needs Node.js at run time: INSTALL_NODE=true)")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["native"], ["javascript"]):
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
