"""runner/staging.py: what a waiting worker makes ahead is what its next job starts with,
and nothing it did not make itself is ever taken."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace

from runner import staging
from tests.conftest import fake, start_one_job
from tests.test_one_job import _wait_for


def _settings(tmp_path: Path, worker: str = "w1") -> SimpleNamespace:
    return SimpleNamespace(worker_id=worker, job_root=tmp_path / "jobs", log_dir=tmp_path / "logs",
                           state_dir=tmp_path / "state")


def _staged(tmp_path: Path) -> list[Path]:
    root = tmp_path / "jobs"
    return sorted(root.glob(".next-*")) if root.is_dir() else []


def test_a_waiting_worker_stages_its_next_job_and_the_job_runs_in_it(runner_env, queue, tmp_path):
    seen = tmp_path / "seen.json"
    proc = start_one_job(runner_env, RUNNER_WAIT_SECONDS="60", RUNNER_POLL_SECONDS="60")
    try:
        _wait_for(lambda: bool(_staged(tmp_path)) and any(
            p.name.startswith(".next-") for p in (tmp_path / "logs" / "jobs").glob(".next-*")),
            timeout=30)
        [staged] = _staged(tmp_path)
        assert stat.S_IMODE(staged.stat().st_mode) == 0o700
        assert sorted(p.name for p in staged.iterdir()) == [
            "agent.stderr.ready", "agent.stdout.ready", "payload.json.ready", "work.ready"]
        assert all(stat.S_IMODE((staged / n).stat().st_mode) == 0o600 and (staged / n).stat().st_size == 0
                   for n in ("agent.stderr.ready", "agent.stdout.ready", "payload.json.ready"))
        [link] = (tmp_path / "logs" / "jobs").glob(".next-*.log")
        run_log = Path(os.path.realpath(link))
        assert run_log.parent == tmp_path / "logs" / "runs" and run_log.is_file()

        job = queue.enqueue(prompt="p", payload={"ticket": 7},
                            config=fake(env_dump=str(seen), sleep=2))
        job_dir = tmp_path / "jobs" / str(job["id"])
        _wait_for(lambda: seen.exists() and seen.stat().st_size > 0, timeout=30)
        # The staged directory became the job's, everything in it under its real name.
        assert not _staged(tmp_path) and job_dir.is_dir()
        assert sorted(p.name for p in job_dir.iterdir()) == [
            "agent.stderr", "agent.stdout", "payload.json", "work"]
        env = json.loads(seen.read_text())
        assert Path(env["RUNNER_PAYLOAD"]) == job_dir / "payload.json"
        body = json.loads((job_dir / "payload.json").read_text())
        assert body["id"] == str(job["id"]) and body["payload"] == {"ticket": 7}
        assert stat.S_IMODE((job_dir / "payload.json").stat().st_mode) == 0o600
        # The job's log link is the staged one, moved: it names this iteration's run log.
        job_link = tmp_path / "logs" / "jobs" / f"{job['id']}.log"
        assert os.path.realpath(job_link) == str(run_log)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert queue.get(job["id"])["status"] == "succeeded"
    assert f'"job_id": "{job["id"]}"' in run_log.read_text()
    assert (tmp_path / "state" / "current_job").exists() is False


def test_only_an_empty_file_of_our_own_is_taken(tmp_path):
    target = tmp_path / "agent.stdout"
    ready = tmp_path / "agent.stdout.ready"
    # A symlink (an agent of the same uid could plant one to make the runner write elsewhere)
    outside = tmp_path / "outside"
    outside.write_text("precious")
    ready.symlink_to(outside)
    assert staging.take(target) is False and not target.exists()
    ready.unlink()
    # A file with something in it
    ready.write_text("x")
    assert staging.take(target) is False and not target.exists()
    # Another user's file
    ready.write_text("")
    os.chown(ready, 65534, 65534)
    assert staging.take(target) is False and not target.exists()
    os.chown(ready, os.geteuid(), os.getegid())
    # A destination that exists already is never replaced
    target.write_text("kept")
    assert staging.take(target) is False and target.read_text() == "kept"
    target.unlink()
    assert staging.take(target) is True and target.exists() and not ready.exists()
    assert outside.read_text() == "precious"


def test_a_planted_symlink_in_place_of_the_staged_dir_is_replaced_not_followed(tmp_path):
    settings = _settings(tmp_path)
    settings.job_root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    staged = staging.next_job_dir(settings)
    staged.symlink_to(elsewhere)
    run_log = tmp_path / "logs" / "runs" / "r.log"
    run_log.parent.mkdir(parents=True)
    run_log.write_text("")
    staging.stage(settings, run_log)
    assert not staged.is_symlink() and staged.is_dir()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
    assert (elsewhere / "keep.txt").read_text() == "mine"


def test_the_staged_dir_is_not_taken_over_an_existing_job_dir_or_with_other_modes(tmp_path):
    settings = _settings(tmp_path)
    run_log = tmp_path / "logs" / "runs" / "r.log"
    run_log.parent.mkdir(parents=True)
    run_log.write_text("")
    settings.job_root.mkdir()
    staging.stage(settings, run_log)
    job_dir = settings.job_root / "0b4e4b0e-2a43-4d7a-9a53-8d5b4f0d1c11"
    job_dir.mkdir()  # an earlier attempt's directory (its agent's HOME, patches)
    assert staging.take_job_dir(settings, job_dir) is False
    assert staging.next_job_dir(settings).is_dir()
    job_dir.rmdir()
    os.chmod(staging.next_job_dir(settings), 0o755)  # not as we made it
    assert staging.take_job_dir(settings, job_dir) is False and not job_dir.exists()
    staging.stage(settings, run_log)  # made again, as it should be
    assert stat.S_IMODE(staging.next_job_dir(settings).stat().st_mode) == 0o700
    assert staging.take_job_dir(settings, job_dir) is True and job_dir.is_dir()


def test_the_staged_work_dir_has_the_mode_of_a_new_one(tmp_path):
    """An isolated agent gets work/ chowned to it; the runner (not root in the container,
    no CAP_DAC_OVERRIDE) must still enter it to start the agent there: 0700 would not do."""
    settings = _settings(tmp_path)
    run_log = tmp_path / "r.log"
    run_log.write_text("")
    staging.stage(settings, run_log)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    staged = staging.next_job_dir(settings) / "work.ready"
    assert stat.S_IMODE(staged.stat().st_mode) == stat.S_IMODE(fresh.stat().st_mode)


def test_staging_again_keeps_what_is_there_and_follows_the_new_run_log(tmp_path):
    settings = _settings(tmp_path)
    settings.job_root.mkdir()
    first = tmp_path / "logs" / "runs" / "1.log"
    first.parent.mkdir(parents=True)
    first.write_text("")
    staging.stage(settings, first)
    made = staging.next_job_dir(settings).stat().st_ino
    time.sleep(0.01)
    second = first.with_name("2.log")
    second.write_text("")
    staging.stage(settings, second)
    assert staging.next_job_dir(settings).stat().st_ino == made  # not made twice
    assert os.path.realpath(staging.job_log_link(settings)) == str(second)
    # Two workers on one job root stage apart.
    other = _settings(tmp_path, "w2")
    staging.stage(other, second)
    assert len(_staged(tmp_path)) == 2


def test_a_job_with_a_repository_gets_its_worktree_in_the_staged_dir(runner_env, queue, git_repo, tmp_path):
    proc = start_one_job(runner_env, RUNNER_WAIT_SECONDS="60", RUNNER_POLL_SECONDS="60")
    try:
        _wait_for(lambda: bool(_staged(tmp_path)), timeout=30)
        job = queue.enqueue(prompt="add a note", repo_url=git_repo,
                            config={"agent": "stub"})
        assert proc.wait(timeout=60) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    assert [c["subject"] for c in row["result"]["commits"]["list"]] == ["stub: record the prompt"]
    assert not _staged(tmp_path)
