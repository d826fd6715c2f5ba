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
    assert missing.returncode == 1 and "no such job" in missing.stderr
    bad = runner(runner_env, "show", "not-a-uuid")
    assert bad.returncode == 1 and "is not a job id" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr


def test_migrate_is_harmless_to_repeat(runner_env):
    for _ in range(2):
        proc = runner(runner_env, "migrate")
        assert proc.returncode == 0 and "up to date" in proc.stdout


def test_show_cancel_retry_take_a_unique_prefix(runner_env, queue):
    job = queue.enqueue(prompt="a")
    prefix = str(job["id"])[:8]
    assert str(job["id"]) in runner(runner_env, "show", prefix).stdout
    assert runner(runner_env, "cancel", prefix).stdout.strip() == "cancelled"
    assert runner(runner_env, "retry", prefix.upper()).stdout.strip() == "queued again"
    unknown = "ffffffff" if not str(job["id"]).startswith("f") else "00000000"
    for cmd in ("show", "cancel", "retry", "logs"):
        proc = runner(runner_env, cmd, unknown)
        assert proc.returncode == 1 and "no such job" in proc.stderr, (cmd, proc.stderr)
    proc = runner(runner_env, "logs", str(uuid.uuid4()))
    assert proc.returncode == 1 and "no such job" in proc.stderr, proc.stderr


def test_an_ambiguous_prefix_is_an_error(runner_env, queue):
    for _ in range(40):
        queue.enqueue(prompt="x")
    firsts = [str(j["id"])[0] for j in queue.list(limit=40)]
    common = max(set(firsts), key=firsts.count)
    proc = runner(runner_env, "show", common)
    assert proc.returncode == 1 and "give more of the id" in proc.stderr, proc.stderr


def test_workers_prune_removes_gone_rows_only(runner_env, queue, db_url):
    import psycopg
    from runner.settings import libpq_dsn
    with psycopg.connect(libpq_dsn(db_url), autocommit=True) as conn:
        conn.execute("INSERT INTO workers (id, host, pid, version, state, last_seen_at) VALUES "
                     "('phantom', 'h', 1, 'v', 'idle', now() - interval '2 hours'), "
                     "('alive', 'h', 2, 'v', 'idle', now())")
    proc = runner(runner_env, "workers", "--prune")
    assert proc.returncode == 0 and "removed 1 worker row" in proc.stdout, proc.stderr
    assert "phantom" not in proc.stdout and "alive" in proc.stdout
    bad = runner(runner_env, "workers", "--prune", "--gone-minutes", "0")
    assert bad.returncode == 2


def test_show_json_timestamps_are_iso_8601(runner_env, queue):
    from datetime import datetime
    job = queue.enqueue(prompt="a")
    row = json.loads(runner(runner_env, "show", str(job["id"]), "--json").stdout)
    for value in (row["created_at"], row["events"][0]["at"]):
        assert "T" in value and datetime.fromisoformat(value).utcoffset() is not None, value
