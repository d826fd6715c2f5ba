"""Running git for the runner: a fixed environment, hardened config, a timeout that
reaches git's helpers, error classification for retries, and redaction.

Every runner git call goes through :func:`git`. Job values reach git only as
validated arguments after ``--`` / ``--end-of-options`` (see runner.inputs). The
hardening ``-c`` flags and environment neutralise config an agent could have planted in
a shared mirror (hooks, fsmonitor, ssh command) and keep git from prompting.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from runner import secrets
from runner.settings import Settings

# Command-line config wins over every config file an agent could write to.
HARDENING = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
             "-c", "credential.helper=", "-c", "protocol.ext.allow=never",
             "-c", "protocol.fd.allow=never", "-c", "advice.detachedHead=false",
             # auto-gc runs inside the command, under the mirror lock, not detached.
             "-c", "gc.autoDetach=false")

# The token only ever lives in the git process's environment, read by runner/gitcred.py.
_TOKEN_VAR = "RUNNER_GIT_TOKEN"
_CREDENTIAL_HELPER = Path(__file__).with_name("gitcred.py")


class GitFailed(Exception):
    """A git command failed; ``kind`` says what kind of failure (see classify)."""

    def __init__(self, args: list[str], code: int | None, stderr: str, kind: str) -> None:
        self.args_, self.code, self.stderr, self.kind = args, code, stderr, kind
        super().__init__(self.tail())

    def tail(self, lines: int = 3) -> str:
        got = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        text = " | ".join(got[-lines:]) if got else f"git exited with code {self.code}"
        return text[:600]


def allowed_protocols(settings: Settings) -> str:
    protocols = ["https", "ssh"]
    if settings.allow_file_repos:
        protocols.append("file")
    if settings.allow_http_loopback:
        protocols.append("http")
    return ":".join(protocols)


def git_env(settings: Settings | None, *, with_token: bool = False) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(Path.home())),
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        # The agent shares this user's HOME: ignore ~/.gitconfig it could have written.
        "GIT_CONFIG_GLOBAL": os.environ.get("RUNNER_GIT_CONFIG_GLOBAL", "/dev/null"),
        # The environment beats core.sshCommand in any config file.
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND",
                                          "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes"),
    }
    for name in ("SSH_AUTH_SOCK", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY",
                 "GIT_SSL_CAINFO", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    if settings is not None:
        env["GIT_ALLOW_PROTOCOL"] = allowed_protocols(settings)
        if with_token and settings.git_token is not None:
            env[_TOKEN_VAR] = settings.git_token.get_secret_value()
            env["RUNNER_GIT_TOKEN_HOSTS"] = ",".join(settings.git_token_hosts
                                                     or settings.allowed_repo_hosts)
            env["RUNNER_GIT_USERNAME"] = settings.git_username
            if settings.allow_http_loopback:
                env["RUNNER_GIT_TOKEN_HTTP_LOOPBACK"] = "1"
    return env


def credential_args(settings: Settings) -> list[str]:
    """``-c`` flags that answer git's credential questions from RUNNER_GIT_TOKEN, through
    runner/gitcred.py, which gives it only to the token's hosts (see there)."""
    if settings.git_token is None:
        return []
    helper = f"!{shlex.quote(sys.executable)} -I -S {shlex.quote(str(_CREDENTIAL_HELPER))}"
    return ["-c", f"credential.helper={helper}"]


def git(*args: str, cwd: Path | None = None, settings: Settings | None = None,
        timeout: float | None = None, with_token: bool = False,
        check: bool = True, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``git <hardening> <args>``; raise GitFailed (classified) when it fails.
    ``env`` adds variables (GIT_INDEX_FILE, an identity) to the fixed environment;
    ``input`` is git's stdin (a ``--batch`` command's lines), else stdin is empty."""
    return start(*args, cwd=cwd, settings=settings, timeout=timeout, with_token=with_token,
                 env=env, input=input).wait(check=check)


class Running:
    """A git process started by :func:`start`; :meth:`wait` ends it as :func:`git` does."""

    def __init__(self, args: tuple[str, ...], proc: subprocess.Popen[str], settings: Settings | None,
                 timeout: float, input: str | None) -> None:
        self.args, self.proc, self.settings = args, proc, settings
        self.timeout, self.input = timeout, input
        self.started = time.monotonic()

    def wait(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc, args = self.proc, self.args
        timeout = max(self.timeout - (time.monotonic() - self.started), 0.001)
        try:
            out, err = proc.communicate(self.input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # git-remote-https, ssh and pack-objects are git's children: end the whole group.
            _kill_group(proc.pid)
            out, err = proc.communicate()
            raise GitFailed(list(args), None, f"{err}\ngit timed out after {self.timeout:.0f} s",
                            "transient") from None
        finally:
            _kill_group(proc.pid)
        if check and proc.returncode != 0:
            raise GitFailed(list(args), proc.returncode, redact(err, self.settings), classify(err))
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def abandon(self) -> None:
        """Not wanted any more: the process group ends, its output is dropped."""
        _kill_group(self.proc.pid)
        if self.proc.returncode is None:
            self.proc.communicate()


def start(*args: str, cwd: Path | None = None, settings: Settings | None = None,
          timeout: float | None = None, with_token: bool = False,
          env: dict[str, str] | None = None, input: str | None = None) -> Running:
    """:func:`git` started, not waited for: the caller does other work while it runs
    (runner/spare.py checks a spare while the mirror fetches) and then ``wait()``s."""
    extra = credential_args(settings) if (with_token and settings is not None) else []
    argv = ["git", *HARDENING, *extra, *args]
    if timeout is None:
        timeout = settings.git_timeout_seconds if settings is not None else 600
    proc = subprocess.Popen(argv, cwd=cwd, env={**git_env(settings, with_token=with_token),
                                                **(env or {})},
                            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
    return Running(args, proc, settings, timeout, input)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_AUTH = ("authentication failed", "could not read username", "could not read password",
         "permission denied (publickey", "invalid username or password",
         "returned error: 401", "returned error: 403", "terminal prompts disabled",
         "host key verification failed", "http basic: access denied")
_MISSING = ("repository not found", "does not appear to be a git repository",
            "returned error: 404", "no such repository", "project you were looking for could not be found")
_CORRUPT = ("not a git repository", "bad object", "corrupt", "loose object", "unable to read",
            "packfile", "missing object", "did not send all necessary objects",
            "invalid sha1 pointer", "bad tree", "fatal: bad config", "broken link",
            "unable to parse", "not a valid object")
_TRANSIENT = ("could not resolve host", "connection refused", "connection timed out",
              "operation timed out", "timed out", "connection reset", "early eof",
              "the remote end hung up unexpectedly", "rpc failed", "returned error: 5",
              "temporary failure", "network is unreachable", "gnutls", "ssl", "tls",
              "unexpected disconnect", "failed to connect", "couldn't connect",
              "broken pipe", "empty reply from server", "internal server error",
              "cannot lock ref", "unable to create", "index.lock")


def classify(stderr: str) -> str:
    """auth | missing | corrupt | transient | other — first match wins, in that order."""
    low = (stderr or "").lower()
    for kind, needles in (("auth", _AUTH), ("missing", _MISSING), ("corrupt", _CORRUPT),
                          ("transient", _TRANSIENT)):
        if any(n in low for n in needles):
            return kind
    return "other"


def redact(text: str, settings: Settings | None) -> str:
    text = text or ""
    token = os.environ.get(_TOKEN_VAR)
    if settings is not None and settings.git_token is not None:
        token = settings.git_token.get_secret_value()
    if token and len(token) >= 4:
        text = text.replace(token, "***")
    return secrets.redact(text)  # and every other secret and token shape (runner/secrets.py)


def rev(repo: Path, ref: str, settings: Settings) -> str | None:
    """The commit ``ref`` names in ``repo``, or None when it names none."""
    proc = git("rev-parse", "--verify", "-q", "--end-of-options", f"{ref}^{{commit}}",
               cwd=repo, settings=settings, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None
