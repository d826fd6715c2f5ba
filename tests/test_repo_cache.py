"""runner.repo_cache: one mirror per URL, clone once, fetch after, the flock, repairs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.conftest import REPO, make_git_repo
from gitkit import commit, free_port, settings
from structlog.testing import capture_logs

from runner import gitfiles, repo_cache
from runner.errors import RepositoryUnavailable
from runner.gitcmd import git


@pytest.fixture
def origin(tmp_path):
    return make_git_repo(tmp_path / "origin")


def _ensure(url, s):
    mirror = repo_cache.mirror_dir(s.cache_dir, url)
    with repo_cache.locked(mirror, s):
        return repo_cache.ensure_mirror(url, mirror, s), mirror


def test_clone_once_then_fetch_and_job_branches_survive(tmp_path, origin):
    s = settings(tmp_path)
    action, mirror = _ensure(origin, s)
    assert action == "cloned" and (mirror / "HEAD").is_file()
    base = git("rev-parse", "refs/remotes/origin/HEAD", cwd=mirror).stdout.strip()
    git("branch", "runner/job1", base, cwd=mirror)
    new = commit(tmp_path / "origin", {"b.txt": "b"})
    action, _ = _ensure(origin, s)
    assert action == "fetched"
    assert git("rev-parse", "refs/remotes/origin/main", cwd=mirror).stdout.strip() == new
    assert git("rev-parse", "refs/heads/runner/job1", cwd=mirror).stdout.strip() == base
    assert [p.name for p in s.cache_dir.iterdir() if p.suffix == ".git"] == [mirror.name]


def test_mirror_names_differ_per_url_and_stay_inside_the_cache(tmp_path):
    a = repo_cache.mirror_dir(tmp_path, "https://github.com/a/repo.git")
    b = repo_cache.mirror_dir(tmp_path, "https://github.com/b/repo.git")
    c = repo_cache.mirror_dir(tmp_path, "https://github.com/../../..")
    assert a != b and a.parent == b.parent == c.parent == tmp_path


@pytest.mark.parametrize("damage", ["head", "objects", "config"])
def test_corrupt_mirror_is_recloned_once(tmp_path, origin, damage):
    s = settings(tmp_path)
    _, mirror = _ensure(origin, s)
    if damage == "head":
        (mirror / "HEAD").unlink()
    elif damage == "objects":
        shutil.rmtree(mirror / "objects")
        (mirror / "objects").mkdir()
    else:
        (mirror / "config").write_text("[core\nbroken")
    with capture_logs() as logs:
        action, _ = _ensure(origin, s)
    assert action == "cloned"
    assert [e["event"] for e in logs].count("mirror_corrupt_recloning") == 1
    assert git("rev-parse", "refs/remotes/origin/HEAD", cwd=mirror).returncode == 0


def test_missing_repository_is_not_retried(tmp_path):
    s = settings(tmp_path, git_retry_attempts=3)
    with capture_logs() as logs, pytest.raises(RepositoryUnavailable, match="does not exist"):
        _ensure(f"file://{tmp_path}/nope", s)
    assert not [e for e in logs if e["event"] == "git_transient_failure_retrying"]
    assert not list(s.cache_dir.glob("*.tmp"))


def test_unreachable_host_is_retried_then_fails_clearly(tmp_path):
    s = settings(tmp_path, git_retry_attempts=3, allow_http_loopback=True,
                 allowed_repo_hosts="127.0.0.1")
    url = f"http://127.0.0.1:{free_port()}/r.git"
    with capture_logs() as logs, pytest.raises(repo_cache.RepositoryUnreachable,
                                                match="could not be reached"):
        _ensure(url, s)
    assert [e["event"] for e in logs].count("git_transient_failure_retrying") == 2


def test_planted_config_is_removed_and_the_url_restored(tmp_path, origin):
    s = settings(tmp_path)
    _, mirror = _ensure(origin, s)
    cfg = ["git", "config", "--file", str(mirror / "config")]
    for key, value in [("core.fsmonitor", f"touch {tmp_path}/pwned"), ("include.path", str(tmp_path / "absent")),
                       ("filter.evil.smudge", "touch pwned"), ("remote.origin.url", "file:///elsewhere"),
                       ("remote.origin.uploadpack", "touch pwned")]:
        subprocess.run([*cfg, key, value], check=True)
    with capture_logs() as logs:
        assert _ensure(origin, s)[0] == "fetched"
    listed = subprocess.run([*cfg, "--list"], capture_output=True, text=True).stdout
    assert "fsmonitor" not in listed and "evil" not in listed and "include" not in listed
    assert f"remote.origin.url={origin}" in listed and "uploadpack" not in listed
    assert any(e["event"] == "mirror_config_repaired" for e in logs)
    assert not (tmp_path / "pwned").exists()


HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from runner import gitfiles, repo_cache
    sys.path.insert(0, {tests!r})
    from gitkit import settings
    s = settings(Path({tmp!r}))
    with repo_cache.locked(Path({mirror!r}), s):
        print("held", flush=True)
        Path({log!r}).open("a").write(f"child {{time.time()}} start\\n")
        time.sleep(1.0)
        Path({log!r}).open("a").write(f"child {{time.time()}} end\\n")
""")


def test_the_lock_serialises_processes(tmp_path):
    s = settings(tmp_path)
    mirror = s.cache_dir / "x.git"
    log = tmp_path / "log"
    code = HOLDER.format(repo=str(REPO), tests=str(REPO / "tests"), tmp=str(tmp_path),
                         mirror=str(mirror), log=str(log))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with repo_cache.locked(mirror, s, wait=False) as got:
        assert got is False
    with repo_cache.locked(mirror, s):
        log.open("a").write(f"parent {time.time()} start\n")
    child.wait(timeout=30)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [(who, what) for who, _, what in lines] == [
        ("child", "start"), ("child", "end"), ("parent", "start")]


def test_two_workers_clone_a_mirror_only_once(tmp_path, origin):
    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]
        from pathlib import Path
        from gitkit import settings
        from runner import gitfiles, repo_cache
        s = settings(Path({str(tmp_path)!r}))
        url = {origin!r}
        mirror = repo_cache.mirror_dir(s.cache_dir, url)
        with repo_cache.locked(mirror, s):
            print(repo_cache.ensure_mirror(url, mirror, s))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = sorted(p.communicate(timeout=60)[0].split()[-1] for p in procs)
    assert results == ["cloned", "fetched", "fetched"]


def test_planted_config_in_plain_form_is_removed_too(tmp_path, origin):
    # The Python reader of a plain config (no git process per job) sees what git sees.
    s = settings(tmp_path)
    _, mirror = _ensure(origin, s)
    with (mirror / "config").open("a") as f:
        f.write("[core]\n\tfsmonitor = true\n[Filter \"evil\"]\n\tSmudge = cat\n")
    with capture_logs() as logs:
        assert _ensure(origin, s)[0] == "fetched"
    listed = git("config", "--file", str(mirror / "config"), "--list").stdout
    assert "fsmonitor" not in listed and "evil" not in listed
    assert any(e["event"] == "mirror_config_repaired" for e in logs)


@pytest.mark.parametrize("text", [
    "[core]\n\tbare = true\n[remote \"origin\"]\n\turl = file:///x/y.git\n",
    "[Core]\n\tBare = true\n\n  [branch \"runner/A.b\"]\n\trunnerjob = 1\n\trunnerjob = 2\n",
    "[core]\n\tbare = true # a comment\n", "[core]\n\tbare = \"true\"\n",
    "[core]\n\tbare = tr\\\nue\n", "[core]\n\tbare\n", "[core.x]\n\ta = b\n",
    "[core]\n\thooksPath = /tmp/a;b\n", "[include]\n\tpath = /tmp/x\n", "\ta = b\n",
    "[core] bare = true\n", "[branch \"a\\\"b\"]\n\tx = 1\n",
])
def test_plain_config_reader_agrees_with_git(tmp_path, text):
    path = tmp_path / "config"
    path.write_text(text)
    plain = gitfiles.plain_config(path)
    if plain is not None:  # None: git reads it instead
        proc = git("config", "--file", str(path), "--null", "--list")
        assert plain == [tuple(e.split("\n", 1)) for e in proc.stdout.split("\0") if e]


def test_origin_head_read_from_the_files_agrees_with_git(tmp_path, origin):
    s = settings(tmp_path)
    _, mirror = _ensure(origin, s)

    def git_says():
        return git("rev-parse", "--verify", "-q", "refs/remotes/origin/HEAD^{commit}",
                   cwd=mirror, check=False).returncode == 0
    assert gitfiles.origin_head_present(mirror) and git_says()  # in a pack, packed or loose ref
    git("pack-refs", "--all", cwd=mirror)
    assert gitfiles.origin_head_present(mirror) and git_says()
    head = commit(Path(origin.removeprefix("file://")), {"b.txt": "b"})
    _ensure(origin, s)  # a small fetch: its objects loose
    assert (mirror / "objects" / head[:2] / head[2:]).is_file()
    assert gitfiles.origin_head_present(mirror) and git_says()
    # An object store without the commit: neither says it is there.
    shutil.rmtree(mirror / "objects")
    (mirror / "objects").mkdir()
    assert not gitfiles.origin_head_present(mirror) and not git_says()


def _loose_objects(mirror: Path) -> int:
    out = subprocess.run(["git", "-C", str(mirror), "count-objects"], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def test_the_fetch_leaves_gc_to_the_upkeep_after_the_job(tmp_path, origin):
    """The fetch before a job's agent runs no auto-maintenance (a process on the way to the
    agent's start); repo_cache.upkeep, after the job, does git's gc when it is due."""
    s = settings(tmp_path)
    mirror = repo_cache.mirror_dir(s.cache_dir, origin)
    _ensure(origin, s)
    # gc is due: a low gc.auto, and loose objects in objects/17 (what git's estimate counts)
    subprocess.run(["git", "-C", str(mirror), "config", "gc.auto", "1"], check=True)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    paths = []
    for i in range(1200):
        (blobs / str(i)).write_text(f"blob {i}\n")
        paths.append(str(blobs / str(i)))
    subprocess.run(["git", "-C", str(mirror), "hash-object", "-w", "--stdin-paths"],
                   input="\n".join(paths) + "\n", text=True, check=True, capture_output=True)
    loose = _loose_objects(mirror)
    assert loose >= 1200
    assert _ensure(origin, s)[0] == "fetched"
    assert _loose_objects(mirror) == loose, "the fetch ran git's auto-maintenance"
    # Busy (another worker holds the lock): skipped, not waited for.
    with repo_cache.locked(mirror, s):
        repo_cache.upkeep(mirror, s)
    assert _loose_objects(mirror) == loose
    repo_cache.upkeep(mirror, s)
    assert _loose_objects(mirror) < loose


def test_refs_read_from_the_files_agree_with_git(tmp_path, origin):
    """repo_cache.resolve reads the refs a job asks about from the files (no cat-file
    process before every job) only where they say it plainly, and then says what git
    says; a tag object, a missing object or a name of another form is left to git."""
    s = settings(tmp_path)
    _, mirror = _ensure(origin, s)
    src = Path(origin.removeprefix("file://"))

    def git_says(names):
        out = git("cat-file", "--batch-check=%(objectname)", cwd=mirror,
                  input="".join(f"{n}\n" for n in names)).stdout.splitlines()
        return {n: (line if len(line) == 40 else None) for n, line in zip(names, out)}

    names = ("refs/remotes/origin/HEAD^{commit}", "refs/remotes/origin/main^{commit}",
             "refs/heads/runner/a^{commit}", "refs/remotes/origin/nope^{commit}",
             "refs/heads/nope/deeper^{commit}")

    def agree():
        mine = gitfiles.commits_of(mirror, names)
        assert mine == git_says(names)
        assert repo_cache.resolve(mirror, names, s) == mine
        return mine

    first = agree()  # refs loose, objects in the clone's pack
    assert first["refs/remotes/origin/HEAD^{commit}"] is not None
    git("branch", "runner/a", "refs/remotes/origin/HEAD", cwd=mirror)
    assert agree()["refs/heads/runner/a^{commit}"] == first["refs/remotes/origin/HEAD^{commit}"]
    git("pack-refs", "--all", cwd=mirror)  # every ref packed
    agree()
    newer = commit(src, {"b.txt": "b"})
    _ensure(origin, s)  # a small fetch: its objects loose, its ref loose again
    assert agree()["refs/remotes/origin/main^{commit}"] == newer
    git("repack", "-q", "-a", "-d", cwd=mirror)  # everything in one pack
    agree()
    # An annotated tag: ^{commit} peels it, which the files alone do not show; git does.
    git("-c", "user.name=t", "-c", "user.email=t@t", "tag", "-a", "-m", "t", "v1", "HEAD", cwd=src)
    _ensure(origin, s)
    tagged = ("refs/tags/v1^{commit}",)
    with pytest.raises(gitfiles.Unsure):
        gitfiles.commits_of(mirror, tagged)
    assert repo_cache.resolve(mirror, tagged, s) == git_says(tagged) == {tagged[0]: newer}
    # A commit id as a base, and a ref to an object the mirror lacks: git's answer.
    with pytest.raises(gitfiles.Unsure):
        gitfiles.commits_of(mirror, (f"{newer[:10]}^{{commit}}",))
    (mirror / "refs" / "heads" / "ghost").write_text("1" * 40 + "\n")
    ghost = ("refs/heads/ghost^{commit}",)
    with pytest.raises(gitfiles.Unsure):
        gitfiles.commits_of(mirror, ghost)
    assert repo_cache.resolve(mirror, ghost, s) == {ghost[0]: None}


def test_the_upkeep_asks_git_only_when_gc_may_be_due(tmp_path, origin, monkeypatch):
    """An ordinary job's upkeep starts no git process: git's own gc --auto thresholds are
    read from the files first (loose objects in objects/17, packs, gc.auto)."""
    s = settings(tmp_path)
    _, mirror = _ensure(origin, s)
    calls = []
    real = repo_cache.git
    monkeypatch.setattr(repo_cache, "git", lambda *a, **k: calls.append(a) or real(*a, **k))
    repo_cache.upkeep(mirror, s)
    assert calls == []  # a fresh mirror: nothing near git's thresholds
    subprocess.run(["git", "-C", str(mirror), "config", "gc.auto", "1"], check=True)
    (mirror / "objects" / "17").mkdir(exist_ok=True)
    for name in ("a" * 38, "b" * 38):  # git counts names, as this does
        (mirror / "objects" / "17" / name).write_bytes(b"")
    repo_cache.upkeep(mirror, s)
    assert [c[:2] for c in calls] == [("maintenance", "run")]
