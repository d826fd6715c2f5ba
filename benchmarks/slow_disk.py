"""A private PostgreSQL server whose disk flushes slowly, for the benchmarks that compare
commit orders (claim_throughput.py --flush-ms).

This VM's virtio disk flushes in ~0.1 ms (`pg_test_fsync`: fdatasync 106 µs on
2026-12-07); a NAS's spinning disks take milliseconds, and an earlier machine of this kind
~2.7 ms. Where the flush is that slow, *how* commits wait for it decides throughput: a
transaction that sent a NOTIFY holds PostgreSQL's global notify lock until its commit is
flushed, so such commits go one flush at a time. To measure that here, the server gets
slow_disk.c by LD_PRELOAD: fdatasync()/fsync() sleep ``flush_ms`` first, nothing else
changes. ``durable_commit_ms`` then says what one durable commit costs on it, printed
with every result.
"""

from __future__ import annotations

import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from _common import Cluster, durable_commit_ms

SHIM = Path(__file__).resolve().with_name("slow_disk.c")


def build_shim(into: Path) -> Path:
    """slow_disk.c compiled into ``into`` (gcc, as the machine's own packages build)."""
    library = into / "slow_disk.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(SHIM), "-ldl"],
                   check=True, capture_output=True)
    library.chmod(0o755)
    return library


@contextmanager
def slow_disk_server(flush_ms: float, port: int = 5498) -> Iterator[tuple[str, float]]:
    """(admin URL, measured durable-commit ms) of a private cluster whose flushes take
    ``flush_ms`` longer; stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix="runner-slowdisk-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the postgres user reaches its data dir and the library inside
        library = build_shim(root)
        cluster = Cluster(root / "pg", port, env={"LD_PRELOAD": str(library),
                                                  "BENCH_FLUSH_DELAY_US": str(round(flush_ms * 1000))})
        try:
            measured = durable_commit_ms(cluster.url)
            if measured < flush_ms:
                raise RuntimeError(f"the slow disk is not slow: a durable commit took {measured:.2f} ms, "
                                   f"less than the {flush_ms} ms each flush should wait")
            yield cluster.url, measured
        finally:
            cluster.stop()
