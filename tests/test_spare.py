"""Spare worktrees (runner.spare): a checkout made after a job, taken by the next one.

Real git, real mirrors; the one_job tests run real iterations. What a job gets from a
spare must be exactly what the ordinary path (worktree add + reset --hard) makes."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import structlog
import structlog.testing

from tests.conftest import REPO, fake, make_git_repo, run_one_job
from gitkit import commit, settings

from runner import repo_cache, spare, worktree
from runner.agent_user import AgentUser
from runner.jobconfig import parse
from runner.sweep import sweep_mirrors


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                          check=True).stdout


def _files(work: Path) -> dict[str, str]:
    """Every file under the worktree but .git, with its content and mode."""
    out = {}
    for root, dirs, names in os.walk(work):
        dirs[:] = [d for d in dirs if d != ".git"]
        for n in names:
            p = Path(root) / n
            if p.name == ".git" and p.parent == work:
                continue
            rel = str(p.relative_to(work))
            out[rel] = f"{oct(p.lstat().st_mode)}:{p.read_text() if not p.is_symlink() else os.readlink(p)}"
    return out


def _state(ws) -> dict:
    """What the agent and the runner see of a job's worktree."""
    config = _git(ws.mirror, "config", "--get-regexp", rf"^branch\.{ws.branch}\.").split("\n")
    return {
        "files": _files(ws.path),
        "head": _git(ws.path, "symbolic-ref", "HEAD").strip(),
        "commit": _git(ws.path, "rev-parse", "HEAD").strip(),
        "status": _git(ws.path, "status", "--porcelain", "--ignored", "-uall"),
        "config": sorted(line.split(" ")[0] for line in config if line),
        "registered": _git(ws.mirror, "worktree", "list", "--porcelain").count(
            f"worktree {ws.path}\n"),
        "branch": _git(ws.mirror, "rev-parse", f"refs/heads/{ws.branch}").strip(),
    }


def _job(url: str, **extra) -> dict:
    return {"id": uuid.uuid4(), "repo_url": url, "config": {}, **extra}


def _repo(tmp_path: Path) -> str:
    files = {f"d{i // 10}/f{i}.py": f"v = {i}\n" for i in range(30)}
    files[".gitignore"] = "*.log\nbuild/\n"
    url = make_git_repo(tmp_path / "src", files)
    os.symlink("d0/f0.py", tmp_path / "src" / "link")
    (tmp_path / "src" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "src" / "run.sh").chmod(0o755)
    commit(tmp_path / "src", {}, "a link and an executable")
    return url


def _spares(s) -> list[Path]:
    root = spare.spare_root(s)
    return sorted(root.iterdir()) if root.is_dir() else []


def _equal(a, b) -> None:
    """Two job worktrees: the same state but for their branch's name."""
    sa, sb = _state(a), _state(b)
    for key in ("head", "config"):
        sa[key] = [x.replace(a.branch, "B") for x in sa[key]] if isinstance(sa[key], list) \
            else sa[key].replace(a.branch, "B")
        sb[key] = [x.replace(b.branch, "B") for x in sb[key]] if isinstance(sb[key], list) \
            else sb[key].replace(b.branch, "B")
    assert sa == sb
    assert sa["status"] == "" and sa["registered"] == 1 and sa["branch"] == sa["commit"]


def test_a_spare_gives_exactly_what_the_ordinary_path_makes(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path)
    first = worktree.prepare(_job(url), parse({}), s)  # the ordinary path (no spare yet)
    made = spare.replenish(s, first.mirror)
    assert made is not None and made.name.startswith(first.mirror.name + ".")
    assert _spares(s) == [made]
    second = worktree.prepare(_job(url), parse({}), s)
    assert _spares(s) == []  # taken
    _equal(first, second)
    # Its registration now names the job's directory: a prune keeps it, git works in it.
    _git(second.mirror, "worktree", "prune")
    assert _state(second)["registered"] == 1
    (second.path / "new.txt").write_text("x")
    _git(second.path, "add", "new.txt")
    _git(second.path, "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "agent")
    assert worktree.commits(second, s)["count"] == 1
    # Removing the job leaves no registration behind.
    worktree.remove(second, s)
    assert f"worktree {second.path}" not in _git(second.mirror, "worktree", "list", "--porcelain")


def test_a_spare_behind_the_base_is_brought_to_it(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path)
    first = worktree.prepare(_job(url), parse({}), s)
    spare.replenish(s, first.mirror)
    # New commits on the remote: a file changed, one added, one removed, a mode changed.
    src = tmp_path / "src"
    (src / "d0" / "f1.py").unlink()
    (src / "d0" / "f2.py").chmod(0o755)
    new = commit(src, {"d0/f0.py": "changed\n", "added/n.py": "n\n"}, "newer")
    taken = worktree.prepare(_job(url), parse({}), s)
    assert _spares(s) == []
    assert taken.base_commit == new
    ordinary = worktree.prepare(_job(url), parse({}), settings(tmp_path, spare_worktrees=0))
    _equal(ordinary, taken)
    assert (taken.path / "d0" / "f0.py").read_text() == "changed\n"
    assert not (taken.path / "d0" / "f1.py").exists()


def test_a_spare_at_another_base_and_a_continued_branch(tmp_path):
    url = _repo(tmp_path)
    src = tmp_path / "src"
    _git(src, "checkout", "-qb", "other")
    other = commit(src, {"only-on-other.txt": "o\n"}, "other")
    _git(src, "checkout", "-q", "main")
    s = settings(tmp_path)
    first = worktree.prepare(_job(url), parse({}), s)
    spare.replenish(s, first.mirror)
    ws = worktree.prepare(_job(url, base_ref="other"), parse({}), s)
    assert _spares(s) == []
    assert ws.base_commit == other and (ws.path / "only-on-other.txt").is_file()
    ordinary = worktree.prepare(_job(url, base_ref="other"), parse({}),
                                settings(tmp_path, spare_worktrees=0))
    _equal(ordinary, ws)


def test_stray_files_and_changes_in_a_spare_never_reach_the_job(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path)
    first = worktree.prepare(_job(url), parse({}), s)
    made = spare.replenish(s, first.mirror)
    work = made / "work"
    (work / "stray.txt").write_text("s")
    (work / "x.log").write_text("ignored")
    (work / "build").mkdir()
    (work / "build" / "out").write_text("o")
    (work / "nested").mkdir()
    subprocess.run(["git", "init", "-q", str(work / "nested")], check=True)
    (work / "d0" / "f0.py").write_text("tampered\n")  # a tracked file changed
    (work / "d1" / "f10.py").unlink()  # and one deleted
    taken = worktree.prepare(_job(url), parse({}), s)
    assert _spares(s) == []
    _equal(first, taken)


def _untracked(work: Path) -> None:
    (work / "stray.txt").write_text("s")


def _ignored(work: Path) -> None:
    (work / "x.log").write_text("ignored")


def _ignored_dir(work: Path) -> None:
    (work / "build").mkdir()
    (work / "build" / "out").write_text("o")


def _nested_repo(work: Path) -> None:
    subprocess.run(["git", "init", "-q", str(work / "nested")], check=True)


def _tracked_changed(work: Path) -> None:
    (work / "d0" / "f0.py").write_text("tampered\n")


def _tracked_deleted(work: Path) -> None:
    (work / "d1" / "f10.py").unlink()


def _mode_changed(work: Path) -> None:
    (work / "d0" / "f2.py").chmod(0o755)


def _link_retargeted(work: Path) -> None:
    (work / "link").unlink()
    os.symlink("d0/f1.py", work / "link")


@pytest.mark.parametrize("change", [_untracked, _ignored, _ignored_dir, _nested_repo,
                                    _tracked_changed, _tracked_deleted, _mode_changed,
                                    _link_retargeted])
def test_any_one_difference_in_a_spare_makes_the_job_check_it_out_again(tmp_path, change):
    """A spare is used without a checkout only when `git status` (run while the mirror
    fetches) finds nothing in it but its commit; each kind of difference alone is seen."""
    url = _repo(tmp_path)
    s = settings(tmp_path)
    first = worktree.prepare(_job(url), parse({}), s)
    made = spare.replenish(s, first.mirror)
    change(made / "work")
    with structlog.testing.capture_logs() as logs:
        taken = worktree.prepare(_job(url), parse({}), s)
    assert _spares(s) == []
    _equal(first, taken)
    [event] = [e for e in logs if e["event"] == "spare_taken"]
    assert event["checkout"] is True and event["pristine"] is False, event


def test_a_pristine_spare_at_the_remote_head_needs_no_checkout(tmp_path):
    """The common job: the remote did not move since the spare was made. Its branch and
    HEAD are written without a git checkout or clean, and the worktree is what git makes."""
    url = _repo(tmp_path)
    s = settings(tmp_path)
    first = worktree.prepare(_job(url), parse({}), s)
    spare.replenish(s, first.mirror)
    with structlog.testing.capture_logs() as logs:
        taken = worktree.prepare(_job(url), parse({}), s)
    [event] = [e for e in logs if e["event"] == "spare_taken"]
    assert event["checkout"] is False, event
    _equal(first, taken)
    # git agrees it is an ordinary branch checkout: commits land on the job's branch.
    (taken.path / "new.txt").write_text("x")
    _git(taken.path, "add", "new.txt")
    _git(taken.path, "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "agent")
    assert _git(taken.mirror, "rev-parse", f"refs/heads/{taken.branch}").strip() == \
        _git(taken.path, "rev-parse", "HEAD").strip()
    assert worktree.commits(taken, s)["count"] == 1


def test_a_spare_branch_that_exists_already_is_left_to_git(tmp_path):
    """The job's branch exists in the mirror (an earlier job's, with no work of its own):
    the Python shortcut never overwrites a ref; git's checkout -B decides, as without spares."""
    url = _repo(tmp_path)
    s = settings(tmp_path)
    first = worktree.prepare(_job(url, branch="shared"), parse({}), s)
    worktree.remove(first, s)
    spare.replenish(s, first.mirror)
    with structlog.testing.capture_logs() as logs:
        again = worktree.prepare(_job(url, branch="shared"), parse({}), s)
    [event] = [e for e in logs if e["event"] == "spare_taken"]
    assert event["checkout"] is True and event["pristine"] is True and event["moved"] is False, event
    assert _state(again)["status"] == "" and _state(again)["head"] == "refs/heads/shared"


def _break_gitfile(made: Path, mirror: Path, tmp_path: Path) -> None:
    (made / "work" / ".git").write_text(f"gitdir: {tmp_path}/elsewhere\n")


def _break_admin(made: Path, mirror: Path, tmp_path: Path) -> None:
    admin = Path((made / "work" / ".git").read_text().split(": ", 1)[1].strip())
    subprocess.run(["rm", "-rf", str(admin)], check=True)


def _break_index(made: Path, mirror: Path, tmp_path: Path) -> None:
    admin = Path((made / "work" / ".git").read_text().split(": ", 1)[1].strip())
    (admin / "index").write_bytes(b"DIRC garbage")  # git itself refuses the checkout


def _break_binary(made: Path, mirror: Path, tmp_path: Path) -> None:
    (made / "work" / ".git").write_bytes(b"\xff\xfe\x00garbage")


def _break_symlink(made: Path, mirror: Path, tmp_path: Path) -> None:
    subprocess.run(["mv", str(made / "work"), str(made / "real")], check=True)
    os.symlink(made / "real", made / "work")


def test_an_odd_spare_is_removed_and_the_job_takes_the_ordinary_path(tmp_path):
    url = _repo(tmp_path)
    for i, breaks in enumerate((_break_gitfile, _break_admin, _break_index, _break_binary,
                                  _break_symlink)):
        s = settings(tmp_path / str(i))
        s.job_root.parent.mkdir(exist_ok=True)
        first = worktree.prepare(_job(url), parse({}), s)
        made = spare.replenish(s, first.mirror)
        breaks(made, first.mirror, tmp_path)
        ws = worktree.prepare(_job(url), parse({}), s)
        assert _spares(s) == [], breaks.__name__
        _equal(first, ws)
        # Nothing of the broken spare is left registered (only the two jobs and the mirror).
        listed = _git(ws.mirror, "worktree", "list", "--porcelain")
        assert listed.count("worktree ") == 3, (breaks.__name__, listed)


def test_a_spare_of_another_mirror_is_never_taken(tmp_path):
    url_a = _repo(tmp_path)
    # The same commits under another URL: git alone would not notice the mix-up.
    subprocess.run(["git", "clone", "-q", str(tmp_path / "src"), str(tmp_path / "b")], check=True)
    commit(tmp_path / "b", {"b.txt": "b\n"}, "only in b")
    url_b = f"file://{tmp_path / 'b'}"
    s = settings(tmp_path)
    a = worktree.prepare(_job(url_a), parse({}), s)
    b = worktree.prepare(_job(url_b), parse({}), s)
    made = spare.replenish(s, b.mirror)
    # Named for mirror a, registered in b: refused, removed.
    moved = made.with_name(a.mirror.name + ".feedbeef")
    os.rename(made, moved)
    admin = Path((moved / "work" / ".git").read_text().split(": ", 1)[1].strip())
    (admin / "gitdir").write_text(f"{moved}/work/.git\n")  # consistent, but in b
    ws = worktree.prepare(_job(url_a), parse({}), s)
    assert _spares(s) == []
    _equal(a, ws)
    assert not (ws.path / "b.txt").exists()
    assert str(ws.path) not in _git(b.mirror, "worktree", "list", "--porcelain")
    assert ws.branch not in _git(b.mirror, "branch", "--list")


def test_no_spare_for_an_isolated_agent_or_when_turned_off(tmp_path):
    s = settings(tmp_path)
    assert spare.enabled(s, s.agent)
    other = AgentUser(uid=os.geteuid() + 1, gid=os.getegid(), name="agent")
    assert not spare.enabled(s, other)
    assert not spare.enabled(settings(tmp_path, spare_worktrees=0), s.agent)
    url = _repo(tmp_path)
    off = settings(tmp_path, spare_worktrees=0)
    ws = worktree.prepare(_job(url), parse({}), off)
    assert spare.replenish(off, ws.mirror) is None and _spares(off) == []


def test_at_most_the_setting_and_none_while_another_holds_the_lock(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path, spare_worktrees=2)
    ws = worktree.prepare(_job(url), parse({}), s)
    assert spare.replenish(s, ws.mirror) and spare.replenish(s, ws.mirror)
    assert spare.replenish(s, ws.mirror) is None and len(_spares(s)) == 2
    one = settings(tmp_path)
    worktree.prepare(_job(url), parse({}), one)
    assert len(_spares(s)) == 1
    assert spare.replenish(one, ws.mirror) is None  # one is enough for this setting
    worktree.prepare(_job(url), parse({}), one)
    with _held(ws.mirror):  # another worker's fetch: the iteration does not wait for it
        assert spare.replenish(one, ws.mirror) is None
    assert _spares(s) == []


class _held:
    """The mirror's lock, held by another process (flock is per open file, so a thread
    of this process would do too, but a process is what a worker is)."""

    def __init__(self, mirror: Path) -> None:
        self.mirror = mirror

    def __enter__(self):
        code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(repo_cache.lock_path(self.mirror))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def test_a_spare_is_taken_only_under_the_mirror_lock(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path)
    first = worktree.prepare(_job(url), parse({}), s)
    made = spare.replenish(s, first.mirror)
    done: list = []
    with _held(first.mirror):
        t = threading.Thread(target=lambda: done.append(worktree.prepare(_job(url), parse({}), s)))
        t.start()
        time.sleep(1.0)
        assert not done and (made / "work").is_dir()  # still waiting for the lock, spare untouched
    t.join(30)
    assert done and _spares(s) == []
    _equal(first, done[0])


_PREPARE = """
import sys, uuid, json
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from gitkit import settings
from runner import worktree
from runner.jobconfig import parse
s = settings(Path(sys.argv[1]), spare_worktrees=2)
ws = worktree.prepare({"id": uuid.uuid4(), "repo_url": sys.argv[2], "config": {}}, parse({}), s)
print(json.dumps({"path": str(ws.path), "branch": ws.branch}))
"""


def test_concurrent_workers_share_the_spares_and_all_get_the_same_checkout(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path, spare_worktrees=2)
    first = worktree.prepare(_job(url), parse({}), s)
    spare.replenish(s, first.mirror), spare.replenish(s, first.mirror)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _PREPARE, str(tmp_path), url,
                               str(REPO / "tests")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    logs = "".join(r[1] + r[0] for r in results)
    assert logs.count("spare_taken") == 2 and "spare_refused" not in logs
    assert _spares(s) == []
    for out, _ in results:
        got = json.loads(out.strip().splitlines()[-1])
        ws = type(first)(job_dir=Path(got["path"]).parent, path=Path(got["path"]),
                         mirror=first.mirror, branch=got["branch"])
        _equal(first, ws)


def test_the_sweep_removes_dead_makers_extra_and_orphaned_spares(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path, spare_worktrees=2)
    ws = worktree.prepare(_job(url), parse({}), s)
    kept, extra = spare.replenish(s, ws.mirror), spare.replenish(s, ws.mirror)
    os.utime(extra, (time.time() - 60, time.time() - 60))  # the older one goes
    root = spare.spare_root(s)
    dead = root / f".making-{ws.mirror.name}.dead"
    _git(ws.mirror, "worktree", "add", "-q", "--detach", str(dead / "work"), "refs/remotes/origin/HEAD")
    busy = root / f".making-{ws.mirror.name}.busy"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a maker at work
    orphan = root / "gone-0123456789abcdef.git.cafe"
    (orphan / "work").mkdir(parents=True)
    try:
        removed = sweep_mirrors(settings(tmp_path, spare_worktrees=1), spares := [])
        assert sorted(spares) == sorted([dead.name, extra.name, orphan.name]), removed
        assert sorted(p.name for p in root.iterdir()) == sorted([kept.name, busy.name])
        listed = _git(ws.mirror, "worktree", "list", "--porcelain")
        assert str(dead) not in listed and str(extra) not in listed and str(kept) in listed
    finally:
        os.close(fd)
    # Its maker gone, the busy one is a leftover too; with the setting 0 every spare goes.
    sweep_mirrors(settings(tmp_path, spare_worktrees=0), spares := [])
    assert sorted(spares) == sorted([busy.name, kept.name]) and list(root.iterdir()) == []
    assert _git(ws.mirror, "worktree", "list", "--porcelain").count("worktree ") == 2


def test_a_day_old_spare_is_swept(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path)
    ws = worktree.prepare(_job(url), parse({}), s)
    made = spare.replenish(s, ws.mirror)
    sweep_mirrors(s, spares := [])
    assert spares == [] and made.is_dir()
    old = time.time() - spare.STALE_SECONDS - 60
    os.utime(made, (old, old))
    sweep_mirrors(s, spares := [])
    assert spares == [made.name] and not made.exists()


def _events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_each_iteration_leaves_a_spare_for_the_next(queue, runner_env, tmp_path):
    url = _repo(tmp_path)
    jobs = [queue.enqueue(prompt="p", repo_url=url, config=fake(write={f"n{i}.txt": "x"},
                                                                commit=f"job {i}"))
            for i in range(3)]
    outs = [run_one_job(runner_env).stdout for _ in jobs]
    taken = [[e.get("spare") for e in _events(o) if e.get("event") == "worktree_created"]
             for o in outs]
    assert taken == [[False], [True], [True]], outs[-1][-3000:]
    from datetime import datetime

    for job, out in zip(jobs, outs):
        row = queue.get(job["id"])
        assert row["status"] == "succeeded" and row["result"]["commits"]["count"] == 1, row
        # The spare is made after the job is recorded, never on the way to its record.
        made = [e for e in _events(out) if e.get("event") == "spare_made"]
        assert len(made) == 1
        when = datetime.fromisoformat(made[0]["timestamp"].replace("Z", "+00:00"))
        assert row["finished_at"] <= when
    mirror = repo_cache.mirror_dir(tmp_path / "cache", url)
    # Each job's branch holds its one commit, on the remote's HEAD.
    for i, job in enumerate(jobs):
        branch = f"runner/{str(job['id'])[:8]}"
        assert _git(mirror, "log", "--format=%s", "-1", branch).strip() == f"job {i}"
        assert _git(mirror, "rev-parse", f"{branch}~1").strip() == \
            _git(tmp_path / "src", "rev-parse", "HEAD").strip()
    assert len(list((tmp_path / "jobs" / ".spare").iterdir())) == 1
    # Turned off: none made, and the sweep of the next iteration removes the one left.
    queue.enqueue(prompt="p", repo_url=url, config=fake())
    out = run_one_job(runner_env, RUNNER_SPARE_WORKTREES="0").stdout
    assert [e.get("spare") for e in _events(out) if e.get("event") == "worktree_created"] == [False]
    assert list((tmp_path / "jobs" / ".spare").iterdir()) == []


def test_no_spare_when_the_claim_was_lost_or_the_worker_stops(tmp_path):
    from types import SimpleNamespace

    from runner.one_job import after_the_job as leave_spare

    url = _repo(tmp_path)
    s = settings(tmp_path)
    ws = worktree.prepare(_job(url), parse({}), s)
    stop = threading.Event()
    leave_spare(SimpleNamespace(workspace=ws, claim_lost=True), s, stop)
    stop.set()
    leave_spare(SimpleNamespace(workspace=ws, claim_lost=False), s, stop)
    leave_spare(SimpleNamespace(workspace=None, claim_lost=False), s, threading.Event())
    assert _spares(s) == []
    leave_spare(SimpleNamespace(workspace=ws, claim_lost=False), s, threading.Event())
    assert len(_spares(s)) == 1


def test_a_spare_that_cannot_be_made_costs_nothing_but_a_log_line(tmp_path):
    url = _repo(tmp_path)
    s = settings(tmp_path)
    ws = worktree.prepare(_job(url), parse({}), s)
    spare.spare_root(s).write_text("in the way")
    assert spare.replenish(s, ws.mirror) is None
    spare.spare_root(s).unlink()
    # git refusing (here: origin/HEAD gone from the mirror): nothing half-made is left.
    (ws.mirror / "refs" / "remotes" / "origin" / "HEAD").unlink()
    assert spare.replenish(s, ws.mirror) is None
    assert _spares(s) == [] and list(spare.spare_root(s).iterdir()) == []
    assert _git(ws.mirror, "worktree", "list", "--porcelain").count("worktree ") == 2


def test_a_spare_waits_for_the_lock_only_briefly_then_is_dropped(tmp_path, monkeypatch):
    """Another worker's long push holds the lock when the spare is to be renamed: the
    iteration gives the spare up after RENAME_WAIT_SECONDS instead of waiting an hour."""
    url = _repo(tmp_path)
    s = settings(tmp_path)
    ws = worktree.prepare(_job(url), parse({}), s)
    monkeypatch.setattr(spare, "RENAME_WAIT_SECONDS", 0.5)
    real_git, holder = spare.git, []

    def git_then_someone_locks(*args, **kw):
        out = real_git(*args, **kw)
        if args[0] == "reset":  # the checkout, outside the lock: another worker takes it
            holder.append(_held(ws.mirror).__enter__())
        return out

    monkeypatch.setattr(spare, "git", git_then_someone_locks)
    started = time.monotonic()
    try:
        assert spare.replenish(s, ws.mirror) is None
    finally:
        for h in holder:
            h.__exit__()
    assert time.monotonic() - started < 5
    assert list(spare.spare_root(s).iterdir()) == []
    # Its registration goes with the next prune (the sweep's).
    sweep_mirrors(s)
    assert _git(ws.mirror, "worktree", "list", "--porcelain").count("worktree ") == 2


def test_a_planted_lock_in_the_spare_is_never_followed(tmp_path):
    """Something sharing the runner's uid left a symlink where the branch's HEAD is
    written: the runner never writes through it; git refuses the spare too (its lock is
    taken), so the job takes the ordinary path."""
    url = _repo(tmp_path)
    s = settings(tmp_path)
    first = worktree.prepare(_job(url), parse({}), s)
    made = spare.replenish(s, first.mirror)
    admin = Path((made / "work" / ".git").read_text().split(": ", 1)[1].strip())
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    os.symlink(victim, admin / "HEAD.lock")
    with structlog.testing.capture_logs() as logs:
        taken = worktree.prepare(_job(url), parse({}), s)
    assert victim.read_text() == "untouched\n"
    assert [e["event"] for e in logs if e["event"].startswith("spare_")] == ["spare_refused"]
    assert _spares(s) == []
    _equal(first, taken)
