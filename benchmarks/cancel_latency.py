"""Cancel → agent gone: how long from the web app's UPDATE to the agent's whole process
group being gone, through a real `python -m runner.one_job`, next to a raw NOTIFY round
trip measured in the same run.

    python benchmarks/cancel_latency.py [--quick] [--runs N] [--cancels N] [--claude N]
                                        [--baseline REV]

* raw NOTIFY: as in benchmarks/notify_latency.py (a LISTEN thread, pg_notify from another
  connection; perf_counter at receipt − before the send).
* cancel: a job is enqueued whose ``command`` agent writes its pid and sleeps (in its own
  process group, as every agent runs), and a tool-like child of it that sleeps too.
  ``python -m runner.one_job`` runs it with RUNNER_LEASE_SECONDS=600 (renewal every
  200 s: only the LISTEN path can stop it in time). Once the row is ``running``, the
  pidfile is there and the heartbeat connection is idle in pg_stat_activity, the
  benchmark runs the web app's ``UPDATE jobs SET cancel_requested = true`` and polls
  ``runner.procgroup.group_alive(pgid)`` every millisecond until no process of the group
  runs (a zombie awaiting its reaper counts as gone). A second figure
  is UPDATE → the ``cancelled`` status NOTIFY (the job recorded).
* claim lost: the same, with ``UPDATE jobs SET claim_token = gen_random_uuid()`` (another
  worker took the job over); measured until the group is gone.
* agent done: the same agent, but it exits 0 by itself the moment a file appears; from
  the file's creation to the ``succeeded`` status NOTIFY (the job recorded) — the wait
  after every job's end.
* agent line: the same agent prints one line the moment a file appears; from the file's
  creation to the line in the job's log file (what ``runner logs -f`` follows).
* ``--baseline REV``: the same samples, interleaved one by one, through ``one_job`` as of
  that git revision (``git archive`` of its ``runner/``).
* ``--claude N``: N cancels of the real Claude Code CLI (tests/tools/claude_bin.py) while
  it streams a slow answer from the loopback Messages API (tests/fakes/anthropic_api.py);
  the group is the one the runner's state file names.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    export_runner, fresh_database, loadavg, pct, print_header, runner_env, runs_with_median_marked,
    table,
)
from notify_latency import raw_notify  # noqa: E402

import psycopg  # noqa: E402

from runner.queue import Queue  # noqa: E402

AGENT = ("import os,subprocess,sys,time;open(sys.argv[1],'w').write(str(os.getpid()));"
         "subprocess.Popen([sys.executable,'-c','import time;time.sleep(600)']);time.sleep(600)")
# Done by itself: exits 0 once <pidfile>.go exists (looked for every millisecond).
AGENT_DONE = ("import os,sys,time;open(sys.argv[1],'w').write(str(os.getpid()));"
              "go=sys.argv[1]+'.go'\nwhile not os.path.exists(go): time.sleep(0.001)")
# Prints one line once <pidfile>.go exists, then exits once <pidfile>.go2 does.
AGENT_LINE = ("import os,sys,time;open(sys.argv[1],'w').write(str(os.getpid()));"
              "go=sys.argv[1]+'.go'\nwhile not os.path.exists(go): time.sleep(0.001)\n"
              "print('bench-line', flush=True);end=time.time()+60\n"
              "while not os.path.exists(go+'2') and time.time()<end: time.sleep(0.01)")


def ms(seconds: float) -> float:
    return seconds * 1000.0


def _group_alive(pgid: int) -> bool:
    # A zombie counts as gone (runner.procgroup.group_alive): it runs nothing any more.
    from runner.procgroup import group_alive

    return group_alive(pgid)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _claude_setup(tmp: Path, tag: str, api_url: str) -> tuple[dict[str, str], dict]:
    from tests.tools.claude_bin import claude_bin

    home = tmp / f"home-{tag}"
    home.mkdir()
    extra = {"RUNNER_CLAUDE_BIN": str(claude_bin()), "ANTHROPIC_BASE_URL": api_url,
             "ANTHROPIC_API_KEY": "sk-ant-api03-fake-loopback-bench", "HOME": str(home)}
    config = {"agent": "claude", "model": "claude-sonnet-4-5", "permission_mode": "acceptEdits",
              "allowed_tools": ["Write"]}
    return extra, config


def one_stop(url: str, tmp: Path, i: int, how: str, api=None,
             src: str | None = None) -> tuple[float, float | None]:
    """(UPDATE → group gone, UPDATE → final status NOTIFY or None) in seconds; for
    ``how == "done"``, the agent's go file → the ``succeeded`` NOTIFY, twice. ``src``: the
    runner tree to run (a --baseline's), else this one."""
    tag = f"{how}-{i}-{abs(hash(src)) % 10**6}"
    pidfile = tmp / f"agent-{tag}.pid"
    wid = f"bench-cancel-{tag}"
    program = {"done": AGENT_DONE, "line": AGENT_LINE}.get(how, AGENT)
    extra = {"RUNNER_AGENT_COMMAND": f"{sys.executable} -c \"{program}\" {pidfile}"}
    config: dict = {"agent": "command"}
    if api is not None:
        extra, config = _claude_setup(tmp, tag, api.base_url)
        asked_before = len(api.message_requests)
    if src is not None:
        extra["PYTHONPATH"] = src
    env = runner_env(url, tmp / "rt", RUNNER_WORKER_ID=wid, RUNNER_WAIT_SECONDS="0",
                     RUNNER_LEASE_SECONDS="600", **extra)
    state_file = tmp / "rt" / "state"
    with Queue.open(url, "bench-app") as app, psycopg.connect(url, autocommit=True) as admin, \
            psycopg.connect(url, autocommit=True) as listen:
        job = app.enqueue(prompt=f"cancel me {i}", config=config)
        listen.execute("LISTEN runner_jobs")
        proc = subprocess.Popen([sys.executable, "-m", "runner.one_job"], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
        try:
            if api is None:
                _wait(lambda: pidfile.exists() and pidfile.read_text().strip(), 60, "the agent")
                pgid = int(pidfile.read_text())
            else:
                from runner.state import read_agent

                _wait(lambda: read_agent(state_file, wid), 60, "the CLI")
                pgid = read_agent(state_file, wid)[1]
                # Streaming: the loopback API has its request and drips the answer.
                _wait(lambda: len(api.message_requests) > asked_before, 60, "the CLI streaming")
                time.sleep(0.3)
            _wait(lambda: app.job_status(job["id"]) == "running", 30, "running")
            _wait(lambda: admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND state = 'idle'", [f"runner:heartbeat:{wid}"[:63]]).fetchone()[0] == 1,
                30, "the heartbeat's LISTEN")
            time.sleep(0.05)
            for _ in listen.notifies(timeout=0):  # drop what came before
                pass
            t0 = time.perf_counter()
            if how == "line":
                (tmp / f"agent-{tag}.pid.go").touch()
                job_log = tmp / "rt" / "logs" / "jobs" / f"{job['id']}.log"
                while b"bench-line" not in job_log.read_bytes():  # every 0.2 ms (_wait: 5 ms)
                    if time.perf_counter() - t0 > 10:
                        raise RuntimeError("the agent's line did not reach the job's log in 10 s")
                    time.sleep(0.0002)
                seen = time.perf_counter() - t0
                (tmp / f"agent-{tag}.pid.go2").touch()
                proc.wait(30)
                return seen, None
            if how == "done":
                (tmp / f"agent-{tag}.pid.go").touch()
                for note in listen.notifies(timeout=10):
                    if str(job["id"]) in note.payload and '"succeeded"' in note.payload:
                        done = time.perf_counter() - t0
                        proc.wait(30)
                        return done, done
                raise RuntimeError("the job was not recorded succeeded within 10 s")
            if how in ("cancel", "claude"):
                admin.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", [job["id"]])
            else:
                admin.execute("UPDATE jobs SET claim_token = gen_random_uuid() WHERE id = %s",
                              [job["id"]])
            while _group_alive(pgid):
                time.sleep(0.001)
            gone = time.perf_counter() - t0
            recorded = None
            if how == "cancel":
                for note in listen.notifies(timeout=10):
                    if '"status" : "cancelled"' in note.payload or '"status": "cancelled"' in note.payload:
                        recorded = time.perf_counter() - t0
                        break
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return gone, recorded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run, 5 cancels, 5 lost claims")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--cancels", type=int, default=None, help="per run, each of cancel and lost claim")
    ap.add_argument("--claude", type=int, default=0, metavar="N",
                    help="also N cancels of the real Claude Code CLI per run")
    ap.add_argument("--baseline", metavar="REV", help="the same through runner as of REV")
    args = ap.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    n = args.cancels or (5 if args.quick else 20)

    print_header("Cancel latency", ["benchmarks/cancel_latency.py", *sys.argv[1:]])
    variants: list[tuple[str, str | None]] = [("this tree", None)]
    if args.baseline:
        variants.append((f"at {args.baseline}",
                         export_runner(args.baseline, Path(tempfile.mkdtemp(prefix="cancel-baseline-")))))
    rows: dict[str, list[list[object]]] = {name: [] for name, _ in variants}
    for r in range(runs):
        with fresh_database("cancel") as url, tempfile.TemporaryDirectory() as tmpd:
            load = loadavg()
            raw = raw_notify(url, 200)
            got = {name: {"cancel": [], "recorded": [], "lost": [], "done": [], "line": [], "claude": []}
                   for name, _ in variants}
            for i in range(n):
                for name, src in variants:  # interleaved, one sample each
                    g = got[name]
                    gone, rec = one_stop(url, Path(tmpd), i, "cancel", src=src)
                    g["cancel"].append(gone)
                    if rec is not None:
                        g["recorded"].append(rec)
                    g["lost"].append(one_stop(url, Path(tmpd), i, "claim", src=src)[0])
                    g["done"].append(one_stop(url, Path(tmpd), i, "done", src=src)[0])
                    g["line"].append(one_stop(url, Path(tmpd), i, "line", src=src)[0])
            if args.claude:
                from tests.fakes.anthropic_api import FakeAnthropic, slow_text

                with FakeAnthropic(slow_text(600, 0.1)) as api:
                    for i in range(args.claude):
                        for name, src in variants:
                            got[name]["claude"].append(one_stop(url, Path(tmpd), i, "claude", api, src)[0])
            for name, _ in variants:
                g = got[name]
                claude, recorded = g["claude"], g["recorded"]
                rows[name].append([
                    name, r + 1, load, n, ms(pct(raw, 50)), ms(pct(raw, 95)),
                    ms(pct(g["cancel"], 50)), ms(pct(g["cancel"], 95)), ms(max(g["cancel"])),
                    ms(pct(recorded, 50)) if recorded else float("nan"),
                    ms(pct(g["lost"], 50)), ms(pct(g["lost"], 95)), ms(max(g["lost"])),
                    ms(pct(g["done"], 50)), ms(pct(g["done"], 95)),
                    ms(pct(g["line"], 50)), ms(pct(g["line"], 95)),
                    len(claude), ms(pct(claude, 50)) if claude else float("nan"),
                    ms(pct(claude, 95)) if claude else float("nan"),
                    ms(max(claude)) if claude else float("nan"), loadavg()])
        print(f"run {r + 1}/{runs} done", file=sys.stderr, flush=True)
    out = runs_with_median_marked([rows[name] for name, _ in variants], value=6)
    print("UPDATE (cancel_requested, or claim_token taken over) → the agent's process group "
          "gone, through `python -m runner.one_job` with a 600 s lease (renewal every 200 s); "
          "raw NOTIFY round trip in the same run; milliseconds.\n")
    print(table(["runner", "run", "load before", "n each", "raw NOTIFY p50", "raw NOTIFY p95",
                 "cancel→gone p50", "cancel→gone p95", "cancel→gone max",
                 "cancel→`cancelled` NOTIFY p50", "claim lost→gone p50", "claim lost→gone p95",
                 "claim lost→gone max", "agent done→`succeeded` NOTIFY p50",
                 "agent done→`succeeded` p95", "agent line→job log p50", "agent line→job log p95",
                 "n claude", "claude cancel→gone p50",
                 "claude cancel→gone p95", "claude cancel→gone max", "load after"], out))


if __name__ == "__main__":
    main()
