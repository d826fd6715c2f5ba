"""runner.gitcmd: failure classification, the token's path, redaction."""

from __future__ import annotations

import json
import subprocess

import pytest
from gitkit import settings

from runner import gitcmd


@pytest.mark.parametrize("stderr, kind", [
    ("fatal: unable to access 'https://x/': Could not resolve host: x", "transient"),
    ("fatal: unable to access 'http://127.0.0.1:9/x/': Failed to connect to 127.0.0.1 port 9: Connection refused", "transient"),
    ("error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502", "transient"),
    ("fatal: the remote end hung up unexpectedly\nfatal: early EOF", "transient"),
    ("remote: Repository not found.\nfatal: repository 'https://github.com/a/b/' not found", "missing"),
    ("fatal: '/x' does not appear to be a git repository\nfatal: Could not read from remote repository.", "missing"),
    ("fatal: Authentication failed for 'https://github.com/a/b/'", "auth"),
    ("fatal: could not read Username for 'https://github.com': terminal prompts disabled", "auth"),
    ("git@github.com: Permission denied (publickey).\nfatal: Could not read from remote repository.", "auth"),
    ("fatal: not a git repository: '/cache/x.git'", "corrupt"),
    ("error: object file objects/ab/cd is empty\nfatal: loose object abcd is corrupt", "corrupt"),
    ("something else entirely", "other"),
])
def test_classify(stderr, kind):
    assert gitcmd.classify(stderr) == kind


def _fill(s, url_host: str, protocol: str = "https") -> str:
    """What git's credential machinery answers for that host, with the runner's flags."""
    proc = subprocess.run(
        ["git", *gitcmd.HARDENING, *gitcmd.credential_args(s), "credential", "fill"],
        input=f"protocol={protocol}\nhost={url_host}\n\n", capture_output=True, text=True,
        env=gitcmd.git_env(s, with_token=True), timeout=30)
    return proc.stdout


def test_token_only_in_the_git_process_environment(tmp_path):
    s = settings(tmp_path, git_token="tok-SECRET-123456", allowed_repo_hosts=["example.com"])
    args = gitcmd.credential_args(s)
    assert args and not any("tok-SECRET" in a for a in args)
    assert "RUNNER_GIT_TOKEN" not in gitcmd.git_env(s)
    assert gitcmd.git_env(s, with_token=True)["RUNNER_GIT_TOKEN"] == "tok-SECRET-123456"
    # The helper answers git's credential question from that variable.
    answer = _fill(s, "example.com")
    assert "username=x-access-token" in answer and "password=tok-SECRET-123456" in answer


def test_the_token_goes_only_over_https_to_the_token_hosts(tmp_path):
    # RUNNER_GIT_TOKEN_HOSTS was documented but only honoured by a helper the runner never
    # used: a redirect or submodule to another host was answered with the token.
    s = settings(tmp_path, git_token="tok-SECRET-123456", allowed_repo_hosts=["git.example.com"],
                 git_token_hosts="git.example.com, forge.example.org:8443, *.corp.example",
                 git_username="oauth2")
    assert "password=tok-SECRET-123456" in _fill(s, "git.example.com")
    assert "username=oauth2" in _fill(s, "GIT.example.com")
    assert "password=tok-SECRET-123456" in _fill(s, "forge.example.org:8443")
    assert "password=tok-SECRET-123456" in _fill(s, "src.corp.example")
    assert "password=tok-SECRET-123456" in _fill(s, "git.example.com:444")  # any port
    assert "password=tok-SECRET-123456" in _fill(s, "a.src.corp.example")
    for host, protocol in [("evil.example.net", "https"), ("git.example.com", "http"),
                           ("forge.example.org", "https"), ("forge.example.org:443", "https"),
                           ("corp.example", "https"), ("git.example.com.evil.net", "https"),
                           ("127.0.0.1", "http")]:
        assert "password=" not in _fill(s, host, protocol), (host, protocol)
    # Without RUNNER_GIT_TOKEN_HOSTS the allowed repository hosts are the token's hosts.
    default = settings(tmp_path, git_token="tok-SECRET-123456")
    assert "password=" in _fill(default, "github.com") and "password=" not in _fill(default, "example.com")


def test_a_git_username_that_could_break_the_helper_is_refused(tmp_path):
    with pytest.raises(Exception, match="RUNNER_GIT_USERNAME"):
        settings(tmp_path, git_token="t", git_username="x; rm -rf /")


def test_redact(tmp_path):
    s = settings(tmp_path, git_token="tok-SECRET-123456")
    assert gitcmd.redact("fatal: tok-SECRET-123456 rejected", s) == "fatal: *** rejected"


def test_global_config_is_ignored(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[core]\n\tfsmonitor = touch /tmp/never\n[x]\n\ty = 1\n")
    monkeypatch.setenv("HOME", str(home))
    out = gitcmd.git("config", "--get", "x.y", check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert json.dumps(gitcmd.git_env(None)).count("/dev/null") >= 1
