"""Nothing unsafe or secret is stored: an agent's answer with NUL, a lone surrogate, 20 MB of
text and the runner's own secrets (echoed back, as a steered agent would) is recorded —
``succeeded``, capped, storable — and no secret is in any row, event, log or state file."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from runner.secrets import TEXT_CAP
from tests.conftest import run_one_job

DB_PASSWORD = "canary-db-pw-7Q2"
GIT_TOKEN = "canary-git-token-K8d"
API_KEY = "canary-api-key-Z3x"
OAUTH = "canary-oauth-R5t"
SHAPED = "ghp_" + "A1b2C3d4" * 5  # a token shape the runner does not hold


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    user, _, host = netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:{DB_PASSWORD}@{host}"))


def _fake_claude(path: Path, answer_json: str) -> Path:
    """Prints a stream whose result is the given JSON string literal (escapes and all)."""
    script = path / "claude"
    events = [
        '{"type":"system","subtype":"init","model":"m","session_id":"s1"}',
        '{"type":"result","subtype":"success","is_error":false,"num_turns":1,'
        '"session_id":"s1","result":' + answer_json + ',"permission_denials":[]}',
    ]
    lines = "\n".join(events)
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({lines!r} + '\\n')\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _everything_written(queue, job_id, tmp_path: Path) -> str:
    row = queue.get(job_id)
    texts = [json.dumps(row, default=str), json.dumps(queue.events(job_id), default=str),
             json.dumps(queue.workers(), default=str)]
    for root in ("logs", "state"):
        for f in (tmp_path / root).rglob("*"):
            if f.is_file():
                texts.append(f.read_text(errors="replace"))
    return "\n".join(texts)


def test_hostile_answer_is_recorded_capped_and_without_secrets(queue, runner_env, tmp_path):
    secrets_echoed = f"{DB_PASSWORD} {GIT_TOKEN} {API_KEY} {OAUTH} {SHAPED} Bearer abcdefgh12345678"
    big = "x" * (20 * 1024 * 1024)
    # JSON escapes: a NUL and a lone surrogate, as an agent's output can carry them.
    answer = json.dumps(f"nul:\u0000 secrets: {secrets_echoed} ")[:-1] + "\\ud800 " + big + '"'
    fake = _fake_claude(tmp_path, answer)
    job = queue.enqueue(prompt="p", config={"agent": "claude"})
    env = {**runner_env, "DATABASE_URL": _with_password(runner_env["DATABASE_URL"]),
           "RUNNER_CLAUDE_BIN": str(fake), "RUNNER_GIT_TOKEN": GIT_TOKEN,
           "ANTHROPIC_API_KEY": API_KEY, "CLAUDE_CODE_OAUTH_TOKEN": OAUTH,
           "RUNNER_ALLOWED_AGENTS": "claude,command"}
    proc = run_one_job(env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    summary = row["result"]["summary"]
    assert summary.startswith("nul: secrets: ")
    assert "\ufffd" in summary and "\x00" not in summary
    assert len(summary) < TEXT_CAP + 200
    assert "more characters cut by the runner" in summary
    written = _everything_written(queue, job["id"], tmp_path) + proc.stdout + proc.stderr
    for secret in (DB_PASSWORD, GIT_TOKEN, API_KEY, OAUTH, SHAPED, "abcdefgh12345678"):
        assert secret not in written, secret
