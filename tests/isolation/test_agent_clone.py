"""Issue 11 item 1, the workspace part: an agent under its own uid works in a clone it
owns; it can commit there, but it reaches neither the mirror (its config, its refs) nor
another job's branch; the runner brings its commits and leftovers back into the mirror."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from runner import repo_cache
from tests.conftest import FAKES, fake, make_git_repo, run_one_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root (to create users) and setpriv")
SYSTEM_PYTHON = "/usr/bin/python3"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def isolated_env(runner_env, tmp_path):
    from tests.isolation.test_agent_user import _user
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("no system python3 readable by other users")
    agent = _user("rtest-agent")
    base = Path(tempfile.mkdtemp(prefix="clone-"))
    os.chmod(base, 0o711)
    findings = base / "findings"
    findings.mkdir()
    os.chown(findings, agent.pw_uid, agent.pw_gid)
    env = {**runner_env, "RUNNER_JOB_ROOT": str(base / "jobs"), "RUNNER_CACHE_DIR": str(base / "cache"),
           "RUNNER_LOG_DIR": str(base / "logs"), "RUNNER_STATE_DIR": str(base / "state"),
           "RUNNER_AGENT_USER": agent.pw_name,
           "RUNNER_AGENT_COMMAND": f"{SYSTEM_PYTHON} {FAKES / 'fake_agent.py'}"}
    yield env, findings
    shutil.rmtree(base, ignore_errors=True)


def test_an_isolated_agent_commits_in_its_own_clone_and_reaches_no_other_branch(
        isolated_env, queue, tmp_path):
    env, findings = isolated_env
    url = make_git_repo(tmp_path / "origin")
    first = queue.enqueue(prompt="p", repo_url=url, branch="feature/a",
                          config=fake(write={"a.txt": "a\n"}, commit="job a"))
    proc = run_one_job(env)
    assert queue.get(first["id"])["status"] == "succeeded", proc.stdout[-3000:]
    mirror = repo_cache.mirror_dir(Path(env["RUNNER_CACHE_DIR"]), url)
    other_head = _git(mirror, "rev-parse", "refs/heads/feature/a")
    config_before = (mirror / "config").read_text()
    out = findings / "b.txt"
    hostile = [
        f"git for-each-ref --format='%(refname)' > {out}",
        f"git remote -v >> {out}",
        f"(git -C {mirror} update-ref refs/heads/feature/a HEAD && echo WROTE-REF >> {out}) || true",
        f"(echo '[core]' >> {mirror}/config && echo WROTE-CONFIG >> {out}) || true",
        f"(ls {mirror} && echo LISTED-MIRROR >> {out}) || true",
    ]
    second = queue.enqueue(prompt="p", repo_url=url, branch="feature/b", config=fake(
        write={"b.txt": "b\n"}, commit="job b", write_after={"left.txt": "left over\n"}, run=hostile))
    proc = run_one_job(env)
    row = queue.get(second["id"])
    assert row["status"] == "succeeded", (row["error"], proc.stdout[-3000:])
    seen = out.read_text()
    # Its clone holds its own branch only, with no remote; the mirror was out of its reach.
    assert seen.splitlines()[0] == "refs/heads/feature/b" and "feature/a" not in seen, seen
    assert "WROTE-REF" not in seen and "WROTE-CONFIG" not in seen and "LISTED-MIRROR" not in seen
    assert _git(mirror, "rev-parse", "refs/heads/feature/a") == other_head
    config = (mirror / "config").read_text()  # only the runner's record of job b was added
    assert config.startswith(config_before) and config.count("[core]") == 1
    assert config[len(config_before):].startswith('[branch "feature/b"]')
    # Its commit and the runner's commit of its leftovers are on its branch in the mirror.
    commits = row["result"]["commits"]
    assert [c["subject"] for c in commits["list"]] == ["runner: changes the agent left uncommitted", "job b"]
    assert _git(mirror, "show", "refs/heads/feature/b:left.txt") == "left over\n"
    assert "import_error" not in row["result"]


def test_an_isolated_agents_timed_out_attempt_is_continued_from_its_clone(isolated_env, queue, tmp_path):
    """Continue (issue 10 item 2) with a clone: the first attempt commits and leaves a
    file, then hangs past its timeout; its commits come back from its clone, and the
    retry's new clone starts from them."""
    env, findings = isolated_env
    url = make_git_repo(tmp_path / "origin")
    log = findings / "starts.jsonl"
    job = queue.enqueue(prompt="p", repo_url=url, max_attempts=2, config={
        **fake(log_to=str(log), write={"a.txt": "a\n"}, commit="first step",
               write_after={"b.txt": "half\n"}, sleep_unless_exists="a.txt"),
        "timeout_s": 8})
    run_one_job(env, RUNNER_RETRY_BACKOFF_SECONDS="0")
    assert queue.get(job["id"])["status"] == "queued"
    proc = run_one_job(env, RUNNER_RETRY_BACKOFF_SECONDS="0")
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", (row["error"], proc.stdout[-3000:])
    starts = [json.loads(line) for line in log.read_text().splitlines()]
    assert starts[1]["subjects"] == ["runner: changes the agent left uncommitted", "first step", "initial"]


def test_a_rewritten_branch_is_not_taken_into_the_mirror(isolated_env, queue, tmp_path):
    """The agent throws away the branch's start (history rewritten): its commits are not
    forced onto the mirror's branch, and the result says so."""
    env, _ = isolated_env
    url = make_git_repo(tmp_path / "origin")
    job = queue.enqueue(prompt="p", repo_url=url, config=fake(run=[
        "git checkout -q --orphan fresh && git commit -q -m rewritten --allow-empty",
        "git branch -f \"$(git rev-parse --abbrev-ref HEAD@{-1})\" fresh || "
        "git branch -M fresh \"runner/$(echo $RUNNER_JOB_ID | cut -c1-8)\""]))
    proc = run_one_job(env)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", (row["error"], proc.stdout[-3000:])
    assert "a rewritten branch is not taken" in row["result"]["import_error"]
    mirror = repo_cache.mirror_dir(Path(env["RUNNER_CACHE_DIR"]), url)
    branch = f"refs/heads/runner/{str(job['id'])[:8]}"
    assert _git(mirror, "log", "--format=%s", branch).split("\n")[0] == "initial"


def test_a_non_root_runner_with_the_compose_capabilities_brings_the_clone_back(
        isolated_env, queue, tmp_path):
    """As the container runs it: the runner a plain user with CAP_SETUID/SETGID/KILL/CHOWN
    only, the agent another user; the clone is handed over and back with CAP_CHOWN."""
    from tests.conftest import REPO
    from tests.isolation.test_agent_user import CAPS, _user
    env, _ = isolated_env
    runner_user = _user("rtest-runner")
    base = Path(env["RUNNER_JOB_ROOT"]).parent
    for sub in ("jobs", "cache", "logs", "state", "home"):
        (base / sub).mkdir(exist_ok=True)
        os.chown(base / sub, runner_user.pw_uid, runner_user.pw_gid)
    url = make_git_repo(base / "origin")
    subprocess.run(["chown", "-R", f"{runner_user.pw_uid}:{runner_user.pw_gid}", str(base / "origin")],
                   check=True)
    job = queue.enqueue(prompt="p", repo_url=url, config=fake(
        write={"a.txt": "a\n"}, commit="agent", write_after={"b.txt": "b\n"}))
    site = next((Path(REPO) / ".venv" / "lib").glob("python3*/site-packages"))
    proc = subprocess.run(
        ["setpriv", f"--reuid={runner_user.pw_uid}", f"--regid={runner_user.pw_gid}",
         "--clear-groups", f"--inh-caps={CAPS}", f"--ambient-caps={CAPS}",
         f"--bounding-set=-all,{CAPS}", SYSTEM_PYTHON, "-m", "runner.one_job"],
        env={**env, "HOME": str(base / "home"), "PYTHONPATH": f"{REPO}:{site}"}, cwd=REPO,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", (row["error"], proc.stdout[-6000:], proc.stderr[-2000:])
    assert [c["subject"] for c in row["result"]["commits"]["list"]] == [
        "runner: changes the agent left uncommitted", "agent"]
    assert not (base / "jobs" / str(job["id"])).exists()  # removed, agent-owned files and all


def test_an_isolated_agent_without_a_repository_can_write_its_work_dir(isolated_env, queue):
    env, _ = isolated_env
    job = queue.enqueue(prompt="p", config=fake(write={"note.txt": "written\n"}))
    proc = run_one_job(env)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", (row["error"], proc.stdout[-3000:])
    assert not (Path(env["RUNNER_JOB_ROOT"]) / str(job["id"])).exists()


def test_verify_commands_run_as_the_agent_not_as_the_runner(isolated_env, queue, tmp_path):
    # Verify runs what the agent wrote (its tests, its package scripts): as the runner it
    # would have the runner's reach. It gets the agent's uid, and the work tree to write in.
    env, findings = isolated_env
    url = make_git_repo(tmp_path / "origin")
    state_dir = env["RUNNER_STATE_DIR"]
    probe = ("import os, pathlib\n"
             "print('VERIFY-UID', os.getuid())\n"
             "pathlib.Path('built.txt').write_text('x')\n"
             f"try:\n    os.listdir({state_dir!r}); print('READ-RUNNER-STATE')\n"
             "except OSError:\n    print('STATE-REFUSED')\n")
    config = {**fake(write={"a.txt": "a\n"}, commit="job a"), "verify": [[SYSTEM_PYTHON, "-c", probe]]}
    job = queue.enqueue(prompt="p", repo_url=url, config=config)
    proc = run_one_job(env)
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", (row["error"], proc.stdout[-3000:])
    log = (Path(env["RUNNER_LOG_DIR"]) / "jobs" / f"{job['id']}.log").read_text()
    from tests.isolation.test_agent_user import _user
    assert f"[verify] VERIFY-UID {_user('rtest-agent').pw_uid}" in log
    said = [line for line in log.splitlines() if line.startswith("[verify] ") and "$" not in line]
    assert "[verify] STATE-REFUSED" in said and "[verify] READ-RUNNER-STATE" not in said, said
