"""Hostile job values, run as real jobs through ``python -m runner.one_job``: each ends
``failed`` with a clear reason, and nothing is written outside the job root."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import fake, make_git_repo, run_one_job


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    skip = {"jobs", "cache", "logs", "state"}
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            st = os.lstat(Path(dirpath) / name)
            found[str(Path(dirpath, name).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def _repo_with_links(path: Path, links: dict[str, str]) -> str:
    url = make_git_repo(path)
    for name, target in links.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(path)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "links"], check=True)
    return url


def test_hostile_inputs_fail_clearly_and_touch_nothing_outside(queue, runner_env, tmp_path):
    s = tmp_path / "sentinel"
    s.mkdir()
    (s / "keep.txt").write_text("do not touch\n")
    good = make_git_repo(tmp_path / "origin")
    abs_link = _repo_with_links(tmp_path / "r_abs", {"escape": str(s)})
    rel_link = _repo_with_links(tmp_path / "r_rel", {"sub/up": "../../../sentinel/keep.txt"})
    chain = _repo_with_links(tmp_path / "r_chain", {"self": ".", "chain": "self/../../sentinel"})
    cases = [
        # (repo_url, branch, base_ref, config, expected fragment of the error)
        (f"--upload-pack=touch {s}/pwned", None, None, {}, "must not start with '-'"),
        ("-cprotocol.ext.allow=always", None, None, {}, "must not start with '-'"),
        (f"ext::sh -c touch% {s}/pwned", None, None, {}, "transport::address"),
        ("fd::17", None, None, {}, "transport::address"),
        ("https://user:hunter22@github.com/a/b", None, None, {}, "must not contain credentials"),
        ("https://ghp_0123456789abcdef@github.com/a/b", None, None, {}, "must not contain credentials"),
        (f"ssh://-oProxyCommand=touch%20{s}/pwned/a", None, None, {}, "invalid host"),
        ("git@-oProxyCommand=x:a/b", None, None, {}, "invalid host"),
        ("http://github.com/a/b", None, None, {}, "plain http"),
        ("https://evil.example.com/a/b", None, None, {}, "not in RUNNER_ALLOWED_REPO_HOSTS"),
        ("https://github.com/a\nb", None, None, {}, "printable ASCII"),
        ("https://github.com/a%0ab", None, None, {}, "percent-encoded control"),
        ("https://github.com/ünïcode/b", None, None, {}, "printable ASCII"),
        ("https://github.com/" + "a" * 5000, None, None, {}, "too long"),
        ("file://otherhost/etc", None, None, {}, "file:///absolute"),
        (good, "--force", None, {}, "is not allowed"),
        (good, f"--upload-pack=touch {s}/pwned", None, {}, "is not allowed"),
        (good, "../../../sentinel", None, {}, "is not allowed"),
        (good, "a/../../sentinel", None, {}, "git check-ref-format"),
        (good, "x" * 5000, None, {}, "too long"),
        (good, "zweig/ünïcode", None, {}, "is not allowed"),
        (good, "HEAD", None, {}, "is not allowed"),
        (good, "a b", None, {}, "is not allowed"),
        (good, None, f"--upload-pack=touch {s}/pwned", {}, "base_ref"),
        (good, None, "-cfoo=bar", {}, "base_ref"),
        (good, None, "main~1", {}, "base_ref"),
        (good, None, "no-such-branch", {}, "is not a branch, tag or commit"),
        (abs_link, None, None, {}, "symlinks that point outside"),
        (rel_link, None, None, {}, "symlinks that point outside"),
        (chain, None, None, {}, "symlinks that point outside"),
        (good, None, None, {"verify": f"rm -rf {s}"}, "config.verify must be a list"),
        (good, None, None, {"verify": [["sh", 5]]}, "must be a string or a list of strings"),
        (good, None, None, {"push": "yes"}, "config.push must be true or false"),
        (good, None, None, {"verify_timeout_s": -1}, "verify_timeout_s"),
    ]
    assert len(cases) >= 20
    before = _snapshot(tmp_path)
    jobs = []
    for url, branch, base, extra, why in cases:
        config = {**fake(write={f"{s}/pwned": "x"}), **extra}
        row = queue.enqueue(prompt="p", repo_url=url, branch=branch, base_ref=base,
                            config=config, max_attempts=1)
        jobs.append((row["id"], why, url))
    with ThreadPoolExecutor(4) as pool:
        while queue.list(status="queued", limit=1):
            list(pool.map(lambda i: run_one_job(runner_env, RUNNER_WORKER_ID=f"h{i}"), range(4)))
    for job_id, why, url in jobs:
        row = queue.get(job_id)
        assert row["status"] == "failed", (url[:80], row["status"], row["error"])
        assert why in row["error"], (url[:80], row["error"])
        assert "hunter22" not in row["error"] and "ghp_0123" not in row["error"]
        assert row["started_at"] is None  # the agent never ran
    assert _snapshot(tmp_path) == before
    assert (s / "keep.txt").read_text() == "do not touch\n" and not (s / "pwned").exists()
    assert not Path("/tmp/pwned").exists()
    # Kept failed worktrees of the symlink repos hold the links, inside the job root only.
    for job_dir in (tmp_path / "jobs").iterdir():
        assert job_dir.resolve().parent == (tmp_path / "jobs").resolve()
