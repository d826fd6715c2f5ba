"""Hostile job rows inserted straight into the table with SQL, as a buggy web app would,
and run through real supervisor loops (bin/run-agent.sh → python -m runner.one_job).

Each row ends with a reason: `failed` with a readable `error`, or `succeeded` where the
input is actually fine (asserted case by case). Every iteration exits 0: no hostile row
makes the loop fail or stop. Rows the table's constraints cannot hold are refused by
PostgreSQL at INSERT time, which is asserted too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from fleet import Fleet, unfinished
from tests.conftest import make_git_repo

OK = "succeeded"
FAILED = "failed"
BIG = 200_000

# name: (columns as SQL expressions, expected status, fragment of the error or None)
CASES: dict[str, tuple[dict[str, str], str, str | None]] = {
    # -- config of the wrong JSON type, or garbage inside it -------------------------
    "config_json_null": ({"config": "'null'::jsonb"}, FAILED,
                         "config must be a JSON object, got NoneType"),
    "config_string": ({"config": "'\"{\\\"agent\\\": \\\"stub\\\"}\"'::jsonb"}, FAILED,
                      "config must be a JSON object, got str"),
    "config_array": ({"config": "'[{\"agent\": \"stub\"}]'::jsonb"}, FAILED,
                     "config must be a JSON object, got list"),
    "config_number": ({"config": "'42'::jsonb"}, FAILED, "config must be a JSON object, got int"),
    "config_bool": ({"config": "'true'::jsonb"}, FAILED, "config must be a JSON object, got bool"),
    "agent_nested_garbage": ({"config": "'{\"agent\": {\"a\": [1, {\"b\": null}]}}'::jsonb"}, FAILED,
                             "config.agent must be a string, got dict"),
    "agent_null": ({"config": "'{\"agent\": null}'::jsonb"}, FAILED,
                   "config.agent must be a string, got NoneType"),
    "agent_unknown": ({"config": "'{\"agent\": \"gpt-17\"}'::jsonb"}, FAILED,
                      "unknown agent 'gpt-17'; known agents: claude, codex, command, gemini, stub"),
    "agent_shell_injection": ({"config": "'{\"agent\": \"claude; rm -rf /\"}'::jsonb"}, FAILED,
                              "unknown agent 'claude; rm -rf /'"),
    "deep_nesting": ({"config": "('{\"agent\": \"command\", \"x\": ' || repeat('[', 3000) || "
                                "repeat(']', 3000) || '}')::jsonb"}, FAILED,
                     "the job's config is JSON nested too deeply for the runner to read"),
    "payload_deep_nesting": ({"payload": "(repeat('{\"a\": ', 5000) || '1' || repeat('}', 5000))::jsonb"},
                             FAILED, "the job's payload is JSON nested too deeply"),
    # -- prompts -----------------------------------------------------------------------
    "prompt_only_whitespace": ({"prompt": "E'   \\n\\t  '"}, FAILED,
                               "the job has an empty prompt and there is no prompt template for kind 'task'"),
    "prompt_empty_with_template_kind": ({"prompt": "''", "kind": "'review'"}, OK, None),
    "prompt_control_chars": ({"prompt": "E'fix \\x01\\x1b[31m red \\u2400 \\u202e txt.exe'"}, OK, None),
    "prompt_200k": ({"prompt": f"repeat('x', {BIG})"}, FAILED,
                    f"the prompt is {BIG} characters; at most 100000 are allowed"),
    "kind_path_traversal": ({"prompt": "''", "kind": "'../../etc/passwd'"}, FAILED,
                            "no prompt template for kind '../../etc/passwd'"),
    "kind_traversal_to_real_template": ({"prompt": "''", "kind": "'../prompts/review'"}, FAILED,
                                        "no prompt template for kind '../prompts/review'"),
    # -- limits of the wrong type or size ----------------------------------------------
    "timeout_negative": ({"config": "'{\"timeout_s\": -5}'::jsonb"}, FAILED,
                         "config.timeout_s must be a whole number of seconds from 1 to 604800, got -5"),
    "timeout_huge": ({"config": "'{\"timeout_s\": 1e300}'::jsonb"}, FAILED, "config.timeout_s must be"),
    "timeout_string": ({"config": "'{\"timeout_s\": \"60\"}'::jsonb"}, FAILED, "got '60'"),
    "timeout_fraction": ({"config": "'{\"timeout_s\": 1.5}'::jsonb"}, FAILED, "got 1.5"),
    "max_turns_string_claude": ({"config": "'{\"agent\": \"claude\", \"max_turns\": \"10\"}'::jsonb"},
                                FAILED, "config.max_turns must be a whole number from 1 to 500, got '10'"),
    # The config's schema is the same whatever the agent (the web app's client checks it
    # before the INSERT): a key of the wrong type is wrong even where it means nothing.
    "max_turns_string_command": ({"config": "'{\"max_turns\": \"10\"}'::jsonb"}, FAILED,
                                 "config.max_turns must be a whole number from 1 to 500, got '10'"),
    "permission_mode_bypass": ({"config": "'{\"agent\": \"claude\", \"permission_mode\": \"bypassPermissions\"}'::jsonb"},
                               FAILED, "config.permission_mode 'bypassPermissions' is not allowed here"),
    "mcp_config_traversal": ({"config": "'{\"agent\": \"claude\", \"mcp_config\": \"../../etc/passwd\"}'::jsonb"},
                             FAILED, "config.mcp_config must be a file name inside RUNNER_MCP_CONFIG_DIR"),
    # -- env the job may not set -------------------------------------------------------
    "env_database_url": ({"config": "'{\"env\": {\"DATABASE_URL\": \"postgresql://evil\"}}'::jsonb"},
                         FAILED, "config.env may not set DATABASE_URL: the runner controls it"),
    "env_ld_preload": ({"config": "'{\"env\": {\"LD_PRELOAD\": \"/tmp/x.so\"}}'::jsonb"}, FAILED,
                       "config.env may not set LD_PRELOAD"),
    "env_runner_setting": ({"config": "'{\"env\": {\"RUNNER_GIT_TOKEN\": \"x\"}}'::jsonb"}, FAILED,
                           "config.env may not set RUNNER_GIT_TOKEN"),
    "env_bad_name": ({"config": "'{\"env\": {\"A=B; rm\": \"x\"}}'::jsonb"}, FAILED,
                     "config.env has an invalid variable name"),
    "env_string": ({"config": "'{\"env\": \"PATH=/tmp\"}'::jsonb"}, FAILED,
                   "config.env must be an object of NAME: value strings"),
    "env_nested_value": ({"config": "'{\"env\": {\"OK_NAME\": {\"x\": 1}}}'::jsonb"}, FAILED,
                         "config.env.OK_NAME must be a string"),
    # -- verify / push garbage ---------------------------------------------------------
    "verify_object": ({"config": "'{\"verify\": {\"cmd\": \"rm -rf /\"}}'::jsonb"}, FAILED,
                      "config.verify must be a list"),
    "push_string": ({"config": "'{\"push\": \"yes\"}'::jsonb"}, FAILED, "config.push must be true or false"),
    "push_without_repo": ({"config": "'{\"push\": true}'::jsonb"}, FAILED, "config.push needs a repo_url"),
    # -- priorities, attempts, payloads: extremes that are fine -------------------------
    "priority_max": ({"priority": "2147483647"}, OK, None),
    "priority_min": ({"priority": "-2147483648"}, OK, None),
    "payload_huge": ({"payload": "jsonb_build_object('blob', repeat('y', 5000000))"}, OK, None),
    "payload_json_null": ({"payload": "'null'::jsonb"}, OK, None),
    "payload_string": ({"payload": "'\"just a string\"'::jsonb"}, OK, None),
    "attempts_above_max": ({"attempts": "7", "max_attempts": "1"}, OK, None),
    "max_attempts_1_agent_fails": ({"max_attempts": "1", "config": "'{\"fake\": {\"exit\": 3, \"stderr\": [\"boom\"]}}'::jsonb"},
                                   FAILED, "the agent exited with code 3: boom (attempt 1 of 1; no attempts left)"),
    # -- repository and refs -----------------------------------------------------------
    "repo_url_garbage": ({"repo_url": "'not a url at all'"}, FAILED, "repo_url"),
    "repo_url_javascript": ({"repo_url": "'javascript:alert(1)'"}, FAILED,
                            "repository host 'javascript' is not in RUNNER_ALLOWED_REPO_HOSTS"),
    "repo_url_option": ({"repo_url": "'--upload-pack=touch /tmp/pwned'"}, FAILED, "must not start with '-'"),
    # An empty string is taken as "no repository", like NULL.
    "repo_url_empty": ({"repo_url": "''"}, OK, None),
    "branch_upload_pack": ({"repo_url": "{good}", "branch": "'--upload-pack=x'"}, FAILED, "is not allowed"),
    "branch_traversal": ({"repo_url": "{good}", "branch": "'../../etc/passwd'"}, FAILED, "is not allowed"),
    "base_ref_option": ({"repo_url": "{good}", "base_ref": "'-c core.sshCommand=x'"}, FAILED, "base_ref"),
    # -- a buggy app that writes the runner's own columns ------------------------------
    "status_running_without_claim": ({"status": "'running'", "claimed_by": "'ghost'"}, OK, None),
    "status_claimed_without_lease": ({"status": "'claimed'"}, OK, None),
}

# Rows the table refuses: (columns, fragment of PostgreSQL's error).
REFUSED: dict[str, tuple[dict[str, str], str]] = {
    "status_unknown": ({"status": "'done'"}, "jobs_status_known"),
    "attempts_negative": ({"attempts": "-1"}, "jobs_attempts_not_negative"),
    "max_attempts_zero": ({"max_attempts": "0"}, "jobs_max_attempts_positive"),
    "config_sql_null": ({"config": "NULL"}, "not-null"),
    "prompt_sql_null": ({"prompt": "NULL"}, "not-null"),
    "queue_null": ({"queue": "NULL"}, "not-null"),
    "prompt_nul_byte": ({"prompt": "E'a\\x00b'"}, "invalid byte sequence"),
    "config_nul_escape": ({"config": "'{\"agent\": \"a\\u0000b\"}'::jsonb"}, "unsupported Unicode escape"),
    "priority_overflow": ({"priority": "2147483648"}, "out of range"),
    "config_not_json": ({"config": "'{agent: stub'::jsonb"}, "invalid input syntax for type json"),
}


def _insert(conn, name: str, cols: dict[str, str], good: str):
    cols = {"prompt": f"'hostile row {name}'", **cols}
    names = ", ".join(cols)
    values = ", ".join(v.replace("{good}", good) for v in cols.values())
    return conn.execute(f"INSERT INTO jobs ({names}) VALUES ({values}) RETURNING id").fetchone()["id"]


def test_insert_of_rows_the_table_cannot_hold_is_refused(queue):
    for name, (cols, why) in REFUSED.items():
        with pytest.raises(psycopg.Error) as err:
            with queue.conn.transaction():
                _insert(queue.conn, name, cols, "''")
        assert why in str(err.value), (name, str(err.value))
    assert queue.conn.execute("SELECT count(*) AS n FROM jobs").fetchone()["n"] == 0


@pytest.mark.slow
def test_hostile_rows_each_end_with_a_reason_and_every_iteration_exits_0(
        runner_env, queue, tmp_path: Path):
    assert len(CASES) >= 30
    good = "'" + make_git_repo(tmp_path / "origin") + "'"
    ids = {name: _insert(queue.conn, name, cols, good) for name, (cols, _, _) in CASES.items()}
    fleet = Fleet(tmp_path / "workers", {**runner_env, "RUNNER_RETRY_BACKOFF_SECONDS": "0"}, 2)
    started = time.monotonic()
    fleet.start()
    try:
        while unfinished(queue.conn) and time.monotonic() - started < 240:
            time.sleep(0.5)
        # A few more idle iterations, so that a loop that broke would show.
        time.sleep(3)
        alive = [w.proc.poll() is None for w in fleet.workers]
    finally:
        codes = fleet.stop()
    assert unfinished(queue.conn) == 0, queue.conn.execute(
        "SELECT status, prompt, error FROM jobs WHERE status IN ('queued','claimed','running')").fetchall()
    assert alive == [True, True] and codes == [143, 143]
    assert fleet.exit_codes() == {}, fleet.logs()  # every iteration exited 0
    wrong = {}
    for name, (_, status, why) in CASES.items():
        row = queue.get(ids[name])
        if row["status"] != status or (why is not None and why not in (row["error"] or "")) \
                or (status == FAILED and not row["error"]):
            wrong[name] = (row["status"], (row["error"] or "")[:300])
    for name in CASES:
        row = queue.get(ids[name])
        print(f"  {name:34} {row['status']:9} {(row['error'] or '')[:110]}")
    assert wrong == {}, json.dumps(wrong, indent=1)
    for name in ("status_running_without_claim", "status_claimed_without_lease"):
        events = queue.events(ids[name])
        expired = [e for e in events if e["event"] == "lease_expired"]
        assert expired and expired[0]["detail"]["reason"] == \
            "claimed or running without a lease (not set by a runner)", events
    print(f"\nHOSTILE ROWS: {len(CASES)} rows through 2 supervisors in "
          f"{time.monotonic() - started:.1f} s, {fleet.iterations_started()} iterations, all exit 0")
