"""runner.inputs: what a job may give as repository, branch, base ref and paths."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import uuid

import pytest
from gitkit import settings

from runner.errors import InvalidRef, InvalidRepository
from runner.inputs import (UnsafePath, branch_name_ok, check_ref, check_repo_url, display_url,
                           escaping_symlinks, job_dir)


@pytest.fixture
def s(tmp_path):
    return settings(tmp_path, allow_file_repos=False,
                    allowed_repo_hosts="github.com,git.example.org")


@pytest.mark.parametrize("url", [
    "https://github.com/a/b.git", "https://github.com:443/a/b", "ssh://git@github.com/a/b.git",
    "git@github.com:a/b.git", "github.com:a/b", "https://GitHub.com/a/b",
])
def test_good_urls(s, url):
    assert check_repo_url(url, s) == "github.com"


@pytest.mark.parametrize("url, why", [
    ("", "empty"),
    ("--upload-pack=touch /tmp/pwned", "start with '-'"),
    ("-cprotocol.ext.allow=always", "start with '-'"),
    ("ext::sh -c touch% /tmp/pwned", "transport::address"),
    ("ext::sh", "transport::address"),
    ("fd::17", "transport::address"),
    ("https::github.com/a/b", "transport::address"),
    ("https://user:hunter22@github.com/a/b", "credentials"),
    ("https://ghp_abcdef123456@github.com/a/b", "credentials"),
    ("ssh://git:pw@github.com/a/b", "credentials"),
    ("http://github.com/a/b", "plain http"),
    ("git://github.com/a/b", "https:// or ssh://"),
    ("file:///etc", "file:// repositories are not allowed"),
    ("/srv/repo", "user@host:path"),
    ("https://evil.example.com/a/b", "not in RUNNER_ALLOWED_REPO_HOSTS"),
    ("ssh://-oProxyCommand=touch%20x/a", "invalid host"),
    ("git@-oProxyCommand=x:a/b", "invalid host"),
    ("github.com:-oProxyCommand=x", "starting with '-'"),
    ("https://github.com/a\nb", "printable ASCII"),
    ("https://github.com/a%0ab", "percent-encoded control"),
    ("https://github.com/ä/b", "printable ASCII"),
    ("https://github.com/" + "a" * 2000, "too long"),
    ("https://github.com", "no usable repository path"),
    ("https://github.com:99999/a", "valid URL"),
])
def test_bad_urls(s, url, why):
    with pytest.raises(InvalidRepository, match=why.replace("(", r"\(").replace("+", r"\+")) as err:
        check_repo_url(url, s)
    assert "hunter22" not in str(err.value) and "pw@" not in str(err.value)


def test_file_and_loopback_http_only_when_allowed(tmp_path):
    s = settings(tmp_path, allow_file_repos=True, allow_http_loopback=True,
                 allowed_repo_hosts="127.0.0.1")
    assert check_repo_url("file:///srv/repo", s) == ""
    assert check_repo_url("http://127.0.0.1:8080/r.git", s) == "127.0.0.1"
    with pytest.raises(InvalidRepository, match="file:///absolute"):
        check_repo_url("file://otherhost/srv/repo", s)
    with pytest.raises(InvalidRepository, match="plain http"):
        check_repo_url("http://10.0.0.1/r.git", s)


def test_display_url_hides_user_info():
    assert "secret" not in display_url("https://me:secret@github.com/a")


@pytest.mark.parametrize("name", ["main", "feature/x-1", "runner/1234abcd", "v1.2.3", "a+b",
                                  "0123456789abcdef0123456789abcdef01234567"])
def test_good_refs(name):
    assert check_ref(name, "branch") == name


@pytest.mark.parametrize("name, why", [
    ("", "non-empty"), ("--force", "not allowed"), ("-b", "not allowed"),
    ("../../etc/passwd", "not allowed"), ("a/../../b", "git check-ref-format"),
    ("a..b", "git check-ref-format"), ("x.lock", "git check-ref-format"),
    ("a b", "not allowed"), ("a\tb", "not allowed"), ("zweig/ü", "not allowed"),
    ("HEAD", "not allowed"), ("a@{1}", "not allowed"), ("a~1", "not allowed"),
    ("a:b", "not allowed"), ("x" * 300, "too long"), ("a/", "git check-ref-format"),
    ("/a", "not allowed"), (".hidden", "not allowed"), (None, "non-empty"), (5, "non-empty"),
])
def test_bad_refs(name, why):
    with pytest.raises(InvalidRef, match=why):
        check_ref(name, "branch")


def _ref_names() -> list[str]:
    """Every name of up to 3 characters from characters that matter to git's rules,
    longer names built from the tricky pieces, and random ones (~1500 names)."""
    alphabet = "a./-@{:"
    names = ["".join(p) for n in range(1, 4) for p in itertools.product(alphabet, repeat=n)]
    pieces = ["a", ".", "/", ".lock", "-", "@{", "x.lock/", ".a", "+"]
    names += ["".join(p) for p in itertools.product(pieces, repeat=3)]
    rnd = random.Random(17)
    names += ["".join(rnd.choice("ab./-_+0") for _ in range(rnd.randint(1, 12)))
              for _ in range(400)]
    return sorted({n for n in names if "\n" not in n})


def test_branch_rules_agree_with_git_check_ref_format():
    # What check_ref accepts is what `git check-ref-format --branch` accepts (git is the
    # authority; the Python check saves a process per job). Names outside the allowed
    # characters are refused by both, or by check_ref's own stricter set.
    names = _ref_names()
    script = 'for n in "$@"; do git check-ref-format --branch "$n" >/dev/null 2>&1; echo $?; done'
    codes = []
    for i in range(0, len(names), 500):
        chunk = names[i:i + 500]
        out = subprocess.run(["bash", "-c", script, "-", *chunk], capture_output=True,
                             text=True, check=True).stdout.split()
        codes += [c == "0" for c in out]
    assert len(codes) == len(names)
    wrong = [n for n, git_ok in zip(names, codes) if branch_name_ok(n) and not git_ok]
    assert wrong == []  # nothing git refuses gets through
    # and within the allowed characters, nothing git accepts is refused
    allowed = set("abL._/+-0k")
    too_strict = [n for n, git_ok in zip(names, codes)
                  if git_ok and not branch_name_ok(n) and set(n) <= allowed
                  and n[0] not in "._/+-" and n != "HEAD"]
    assert too_strict == []


def test_job_dir(tmp_path):
    job_id = uuid.uuid4()
    assert job_dir(tmp_path, job_id) == tmp_path.resolve() / str(job_id)
    for bad in ("../x", "a/b", "", "..", "/etc"):
        with pytest.raises(UnsafePath):
            job_dir(tmp_path, bad)


def test_escaping_symlinks(tmp_path):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    os.symlink("../README", work / "sub" / "ok")          # inside
    os.symlink("/etc/passwd", work / "abs")               # outside
    os.symlink("../../outside", work / "sub" / "up")      # outside
    os.symlink(".", work / "self")
    os.symlink("self/../x", work / "chain")               # self -> work, .. -> outside
    found = sorted(escaping_symlinks(work))
    assert [f.split(" ")[0] for f in found] == ["abs", "chain", "sub/up"]
