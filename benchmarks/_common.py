"""Shared helpers for the benchmark scripts: a fresh database, machine facts, statistics,
markdown tables. Benchmark-only; nothing in runner/ imports this.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    from runner.settings import libpq_dsn

    return libpq_dsn(os.environ.get("DATABASE_URL") or ADMIN_DEFAULT)


def with_db(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


@contextmanager
def fresh_database(tag: str, migrate: bool = True) -> Iterator[str]:
    """A new database (runner_bench_<tag>_<random>), migrated unless told not to; dropped after."""
    admin = admin_url()
    name = f"runner_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_db(admin, name)
    try:
        if migrate:
            from runner.migrate import upgrade

            upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    try:
        with psycopg.connect(admin_url()) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error:
        pg = "?"
    return {
        "nproc": str(os.cpu_count()), "cpu": cpu, "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "postgres": pg, "python": platform.python_version(), "kernel": platform.release(),
    }


def print_header(title: str, argv: Sequence[str]) -> None:
    m = machine()
    print(f"### {title}\n")
    print(f"- command: `python {' '.join(argv)}`")
    print(f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram']} RAM, PostgreSQL {m['postgres']}, "
          f"Python {m['python']}, Linux {m['kernel']}; shared with other test runs")
    print(f"- load average at start: {loadavg()}\n", flush=True)


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def median_index(values: Sequence[float]) -> int:
    """Index of the median run (the lower median when the count is even)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2]


def runs_with_median_marked(groups: Sequence[Sequence[list]], value: int, run: int = 1) -> list[list]:
    """The rows of every group (the runs of one variant) in order, the median run's
    ``run`` cell (by column ``value``) marked "(median)"."""
    out: list[list] = []
    for rows in groups:
        mid = median_index([row[value] for row in rows])
        for i, row in enumerate(rows):
            row[run] = f"{row[run]}{' (median)' if i == mid else ''}"
            out.append(row)
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def runner_env(db_url: str, root: Path, **extra: str) -> dict[str, str]:
    """Environment for `python -m runner.one_job` against db_url, all state under root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_") and k != "DATABASE_URL"}
    env.update({
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(REPO),
        "RUNNER_JOB_ROOT": str(root / "jobs"),
        "RUNNER_CACHE_DIR": str(root / "cache"),
        "RUNNER_LOG_DIR": str(root / "logs"),
        "RUNNER_STATE_DIR": str(root / "state"),
        "RUNNER_LOG_FORMAT": "json",
        "RUNNER_DEFAULT_AGENT": "command",
        "RUNNER_KILL_GRACE_SECONDS": "2",
    })
    env.update(extra)
    return env


def monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def export_runner(rev: str, into: Path) -> str:
    """runner/ as of git revision ``rev``, unpacked into ``into`` (``git archive``: no
    worktree, nothing in the checkout changes), for a ``--baseline REV`` beside this tree:
    put the returned folder first on PYTHONPATH."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "runner"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into)


def pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else (shutil.which(name) or name)


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Cluster:
    """A private PostgreSQL cluster: initdb in ``root``, run as the ``postgres`` user on its
    own port and socket dir (the machine's main cluster is not touched). ``env``: more
    environment for the server (benchmarks/slow_disk.py's LD_PRELOAD); ``options``: more
    ``-c name=value`` settings."""

    def __init__(self, root: Path, port: int, env: dict[str, str] | None = None,
                 options: Sequence[str] = ("max_connections=100",)) -> None:
        self.root, self.data, self.sock, self.port = root, root / "data", root / "sock", port
        for d in (root, self.sock):
            d.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:  # initdb and postgres refuse to run as root
                shutil.chown(d, "postgres")
        subprocess.run(as_postgres([pg_bin("initdb"), "-D", str(self.data), "-A", "trust",
                                    "-U", "postgres"]), check=True, capture_output=True)
        opts = " ".join([f"-p {port} -k {self.sock} -c listen_addresses=127.0.0.1",
                         *(f"-c {o}" for o in options)])
        server_env = [f"{k}={v}" for k, v in (env or {}).items()]
        subprocess.run(as_postgres(["env", *server_env, pg_bin("pg_ctl"), "-D", str(self.data),
                                    "-o", opts, "-w", "-l", str(root / "log"), "start"]),
                       check=True, capture_output=True)
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def stop(self) -> None:
        subprocess.run(as_postgres([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                    "stop"]), capture_output=True)


def durable_commit_ms(url: str, commits: int = 200) -> float:
    """Median milliseconds of one durable COMMIT that wrote WAL (a transactional logical
    message, as runner's flush_wal) on ``url``: what this server's disk makes a flush cost."""
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(commits):
            t0 = time.perf_counter()
            conn.execute("SELECT pg_logical_emit_message(true, 'bench', '')")
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
