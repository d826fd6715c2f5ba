"""The operator's CLI, run as a real process against a real database."""

import json
import subprocess
import sys
import uuid

from tests.conftest import REPO


def runner(env, *args):
    return subprocess.run([sys.executable, "-m", "runner", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_enqueue_prints_the_id_last_and_show_json_has_the_row(runner_env, queue):
    proc = runner(runner_env, "enqueue", "--prompt", "fix it", "--queue", "q2", "--priority", "7",
                  "--max-attempts", "5", "--kind", "review", "--branch", "feature/x",
                  "--config", '{"agent": "stub", "model": "sonnet"}')
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().splitlines()[-1]
    uuid.UUID(job_id)
    shown = runner(runner_env, "show", job_id, "--json")
    row = json.loads(shown.stdout)
    assert row["status"] == "queued" and row["queue"] == "q2" and row["priority"] == 7
    assert row["max_attempts"] == 5 and row["kind"] == "review" and row["branch"] == "feature/x"
    assert row["config"] == {"agent": "stub", "model": "sonnet"}
    assert [e["event"] for e in row["events"]] == ["enqueued"]
    assert "claim_token" not in row


def test_enqueue_rejects_config_that_is_not_a_json_object(runner_env, queue):
    proc = runner(runner_env, "enqueue", "--prompt", "p", "--config", "[1,2]")
    assert proc.returncode == 1 and "--config must be a JSON object" in proc.stderr
    proc = runner(runner_env, "enqueue", "--prompt", "p", "--config", "{oops")
    assert proc.returncode == 1 and "--config is not valid JSON" in proc.stderr
    assert queue.list() == []


def test_jobs_lists_and_filters(runner_env, queue):
    a = queue.enqueue(prompt="a", queue="alpha")
    queue.enqueue(prompt="b", queue="beta")
    out = runner(runner_env, "jobs", "--queue", "alpha").stdout
    assert str(a["id"]) in out and "beta" not in out
    assert "STATUS" in out.splitlines()[0]
    assert str(a["id"]) not in runner(runner_env, "jobs", "--status", "failed").stdout


def test_cancel_and_retry(runner_env, queue):
    job = queue.enqueue(prompt="a")
    assert runner(runner_env, "cancel", str(job["id"])).stdout.strip() == "cancelled"
    again = runner(runner_env, "cancel", str(job["id"]))
    assert again.returncode == 1 and "already finished" in again.stderr
    assert runner(runner_env, "retry", str(job["id"])).stdout.strip() == "queued again"
    assert queue.get(job["id"])["status"] == "queued"


def test_unknown_or_malformed_ids_get_a_sentence(runner_env, queue):
    missing = runner(runner_env, "show", str(uuid.uuid4()))
    assert missing.returncode == 1 and "no job" in missing.stderr
    bad = runner(runner_env, "show", "not-a-uuid")
    assert bad.returncode == 1 and "is not a job id" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr


def test_migrate_is_harmless_to_repeat(runner_env):
    for _ in range(2):
        proc = runner(runner_env, "migrate")
        assert proc.returncode == 0 and "up to date" in proc.stdout
