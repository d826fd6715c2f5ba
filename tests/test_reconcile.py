"""What a dead iteration leaves behind is handed back, and its agent does not live on."""

import os
import signal

from tests.conftest import fake, run_one_job, start_one_job
from tests.waiting import wait_for as _wait


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_next_iteration_kills_the_agent_a_sigkilled_iteration_left_running(runner_env, queue, tmp_path):
    pidfile = tmp_path / "agent.pid"
    grandchild = tmp_path / "grandchild.pid"
    job = queue.enqueue(prompt="p", config=fake(sleep=120, pidfile=str(pidfile),
                                                grandchild=str(grandchild)))
    proc = start_one_job(runner_env, RUNNER_WORKER_ID="box-2")
    _wait(lambda: grandchild.exists() and grandchild.read_text() and pidfile.read_text())
    agent, helper = int(pidfile.read_text()), int(grandchild.read_text())
    os.kill(proc.pid, signal.SIGKILL)  # the iteration dies; its agent does not
    proc.wait()
    assert _alive(agent) and _alive(helper)

    queue.conn.execute("UPDATE jobs SET config = jsonb_set(config, '{fake}', '{}')")
    done = run_one_job(runner_env, RUNNER_WORKER_ID="box-2")
    assert done.returncode == 0, done.stdout
    assert "orphaned_agent_killed" in done.stdout
    _wait(lambda: not _alive(agent) and not _alive(helper), timeout=5)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded" and row["attempts"] == 2


def test_a_stale_agent_record_never_kills_an_unrelated_group(runner_env, queue, tmp_path):
    # A record naming our own test's process group (a reused id) must be ignored.
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    record = state_dir / "agent.box-3"
    record.write_text(f"00000000-0000-0000-0000-000000000000 {os.getpgrp()} 999999999\n")
    proc = run_one_job(runner_env, RUNNER_WORKER_ID="box-3")
    assert proc.returncode == 0
    assert "orphaned_agent_killed" not in proc.stdout
    assert not record.exists()


def test_workers_sharing_a_state_dir_never_kill_each_others_agents(runner_env, queue, tmp_path):
    pidfile, release = tmp_path / "agent.pid", tmp_path / "release"
    # The agent runs until released, however long the other iterations take on a busy box.
    job = queue.enqueue(prompt="p", config=fake(until_exists=str(release), pidfile=str(pidfile)))
    busy = start_one_job(runner_env, RUNNER_WORKER_ID="box-4")
    _wait(lambda: pidfile.exists() and pidfile.read_text())
    # Another worker (same state dir) and even the same worker id in another live
    # process: neither touches the running agent.
    for worker in ("box-5", "box-4"):
        other = run_one_job(runner_env, RUNNER_WORKER_ID=worker)
        assert "orphaned_agent_killed" not in other.stdout
    assert _alive(int(pidfile.read_text()))
    release.touch()
    out, _ = busy.communicate(timeout=60)
    assert busy.returncode == 0, out
    assert queue.get(job["id"])["status"] == "succeeded"


def test_a_tool_process_in_its_own_session_does_not_outlive_a_sigkilled_iteration(runner_env, queue, tmp_path):
    # Claude Code runs each Bash tool command in a session of its own: killing the CLI's
    # process group misses it. The next iteration finds it by the attempt's marker.
    escapee_pid, late = tmp_path / "escapee.pid", tmp_path / "late-work"
    queue.enqueue(prompt="p", config=fake(sleep=120, escapee={
        "pidfile": str(escapee_pid), "after": 8, "path": str(late)}))
    proc = start_one_job(runner_env, RUNNER_WORKER_ID="box-6")
    _wait(lambda: escapee_pid.exists() and escapee_pid.read_text())
    escapee = int(escapee_pid.read_text())
    assert os.getsid(escapee) == escapee  # really in a session of its own
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _alive(escapee)

    queue.conn.execute("UPDATE jobs SET config = jsonb_set(config, '{fake}', '{}')")
    done = run_one_job(runner_env, RUNNER_WORKER_ID="box-6")
    assert done.returncode == 0, done.stdout
    assert "orphaned_agent_killed" in done.stdout
    assert not _alive(escapee)
    assert not late.exists()
