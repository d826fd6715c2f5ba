"""runner.verify: the gate after the agent — all pass → succeeded, else failed with the
command and its output tail; output in the job's log; no secrets in its environment."""

from __future__ import annotations

import json

from tests.conftest import fake, make_git_repo, run_one_job
from gitkit import settings

from runner import jobconfig, verify


def test_passing_commands_succeed_and_stream_to_the_log(queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    job = queue.enqueue(prompt="p", repo_url=url, config={
        **fake(write={"a.txt": "a"}, commit="c"),
        "verify": ["test -f a.txt", ["sh", "-c", "echo hello-from-verify"]]})
    out = run_one_job(runner_env).stdout
    row = queue.get(job["id"])
    assert row["status"] == "succeeded", row["error"]
    assert [r["exit_code"] for r in row["result"]["verify"]] == [0, 0]
    assert "[verify] hello-from-verify" in out
    log_text = "".join(p.read_text() for p in (tmp_path / "logs" / "runs").iterdir())
    assert "[verify] $ test -f a.txt" in log_text


def test_a_failing_command_fails_the_job_with_its_output(queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    job = queue.enqueue(prompt="p", repo_url=url, config={
        **fake(write={"a.txt": "a"}, commit="c"),
        "verify": ["true", "sh -c 'echo line-one; echo boom-detail >&2; exit 3'", "touch never"]})
    run_one_job(runner_env)
    row = queue.get(job["id"])
    assert row["status"] == "failed"
    assert "verify command `sh -c 'echo line-one; echo boom-detail >&2; exit 3'` exited with code 3" in row["error"]
    assert "line-one" in row["error"] and "boom-detail" in row["error"]
    assert len(row["result"]["verify"]) == 2  # the third never ran
    assert row["result"]["commits"]["count"] == 1


def test_timeout_and_missing_program(queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    slow = queue.enqueue(prompt="p", repo_url=url, config={
        **fake(), "verify": ["sleep 30"], "verify_timeout_s": 1})
    missing = queue.enqueue(prompt="p", repo_url=url, config={
        **fake(), "verify": ["no-such-program-xyz --flag"]})
    run_one_job(runner_env), run_one_job(runner_env)
    assert "`sleep 30` timed out after 1 s" in queue.get(slow["id"])["error"]
    err = queue.get(missing["id"])["error"]
    assert "no-such-program-xyz" in err and "code 127" in err


def test_verify_environment_has_no_secrets(queue, runner_env, tmp_path):
    url = make_git_repo(tmp_path / "origin")
    dump = tmp_path / "verify-env.json"
    job = queue.enqueue(prompt="p", repo_url=url, config={
        **fake(), "env": {"MY_SETTING": "1"},
        "verify": [["python3", "-c", f"import json,os; open({str(dump)!r},'w').write(json.dumps(dict(os.environ)))"]]})
    run_one_job(runner_env, RUNNER_GIT_TOKEN="gittok-123456", ANTHROPIC_API_KEY="sk-ant-abcdef")
    assert queue.get(job["id"])["status"] == "succeeded"
    env = json.loads(dump.read_text())
    assert env["MY_SETTING"] == "1" and "GIT_AUTHOR_NAME" in env
    text = json.dumps(env)
    for secret in ("gittok-123456", "sk-ant-abcdef", "DATABASE_URL", "RUNNER_GIT_TOKEN"):
        assert secret not in text


def test_parse(tmp_path):
    s = settings(tmp_path)
    plan = verify.plan(jobconfig.parse({"verify": ["make test", ["pytest", "-q"]]}), s)
    assert plan.commands == [["make", "test"], ["pytest", "-q"]] and plan.timeout == 600
    assert verify.plan(jobconfig.parse({}), s).commands == []
