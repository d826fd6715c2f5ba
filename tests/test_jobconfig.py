"""The job config's one definition: its published schema, the docs' table, and the checks a
web app gets before its INSERT (client, `runner enqueue`, `runner validate`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import psycopg
import pytest
from sqlalchemy import create_engine

from runner import client, jobconfig
from runner.agents.codex import SANDBOXES
from runner.agents.gemini import APPROVAL_MODES
from runner.errors import InvalidJob
from tests.conftest import REPO

GOOD = {"agent": "claude", "model": "claude-sonnet-4-5", "permission_mode": "acceptEdits",
        "allowed_tools": ["Edit", "Bash(git diff:*)"], "max_turns": 40, "effort": "high",
        "timeout_s": 1800, "env": {"APP_MODE": "test"}, "verify": ["make test"], "push": False,
        "commit_leftovers": False, "on_retry": "restart", "max_budget_usd": 2.5,
        "max_tokens": 200000, "output_schema": {"type": "object", "required": ["ok"]},
        "web_app_note": "kept as it is"}


def cli(*args, env=None, stdin=None):
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_published_schema_is_the_generated_one():
    published = (REPO / "docs" / "job-config.schema.json").read_text()
    assert published == jobconfig.schema_text(), "regenerate: runner schema > docs/job-config.schema.json"
    proc = cli("schema", env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(published)


def test_every_key_is_in_the_schema_and_in_the_docs_table():
    schema_keys = set(jobconfig.json_schema()["properties"])
    text = (REPO / "docs" / "agents.md").read_text()
    table = text.split("## Config keys", 1)[1].split("\n\n## ", 1)[0]
    doc_keys = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert doc_keys == schema_keys
    # the keys every adapter and module reads are typed there
    assert {"agent", "model", "permission_mode", "allowed_tools", "disallowed_tools", "effort",
            "max_turns", "mcp_config", "timeout_s", "env", "verify", "verify_timeout_s", "push",
            "commit_leftovers", "on_retry", "max_budget_usd", "max_tokens",
            "output_schema"} <= schema_keys


def test_agent_vocabularies_match_the_adapters():
    assert jobconfig.AGENT_KEYS["codex"].permission_modes == tuple(SANDBOXES)
    assert set(jobconfig.AGENT_KEYS["gemini"].permission_modes) == set(APPROVAL_MODES)


def test_a_good_config_round_trips_through_the_client(db_url, queue):
    with psycopg.connect(db_url) as conn:
        job = client.enqueue(conn, prompt="Fix it", config=GOOD)
    row = queue.get(job.id)
    assert job.created and row["status"] == "queued" and row["config"] == GOOD
    parsed = jobconfig.parse(row["config"])
    assert parsed == jobconfig.parse(GOOD)
    assert parsed.max_turns == 40 and parsed.on_retry == "restart" and parsed.commit_leftovers is False
    assert parsed.web_app_note == "kept as it is"


def test_defaults_of_the_new_keys():
    parsed = jobconfig.parse({})
    assert (parsed.commit_leftovers, parsed.on_retry, parsed.push) == (True, "continue", False)
    assert parsed.max_budget_usd is None and parsed.max_tokens is None and parsed.output_schema is None


BAD = [
    ({"max_turns": "5"}, "config.max_turns must be a whole number from 1 to 500, got '5'"),
    ({"timeout_s": 0}, "config.timeout_s must be a whole number of seconds from 1 to 604800, got 0"),
    ({"on_retry": "again"}, "config.on_retry must be one of continue, restart, got 'again'"),
    ({"commit_leftovers": "yes"}, "config.commit_leftovers must be true or false, got 'yes'"),
    ({"max_budget_usd": 0}, "config.max_budget_usd must be a number of US dollars above 0 and at most 10000, got 0"),
    ({"max_budget_usd": "5"}, "config.max_budget_usd must be a number of US dollars above 0 and at most 10000, got '5'"),
    ({"max_tokens": -1}, "config.max_tokens must be a whole number from 1 to 1000000000, got -1"),
    ({"max_tokens": 2.5}, "config.max_tokens must be a whole number from 1 to 1000000000, got 2.5"),
    ({"output_schema": "object"}, "config.output_schema must be a JSON Schema object, got str"),
    ({"output_schema": {"type": "thing"}}, "config.output_schema has an invalid \"type\" 'thing'"),
    ({"agent": "claude", "effort": "minimal"}, "config.effort must be one of low, medium, high, xhigh, max, got 'minimal'"),
    ({"agent": "codex", "effort": "max"}, "config.effort must be one of minimal, low, medium, high, xhigh, got 'max'"),
    ({"agent": "gemini", "max_turns": 3}, "config.max_turns is not supported for agent 'gemini'"),
    ({"env": {"ANTHROPIC_API_KEY": "x"}}, "config.env may not set ANTHROPIC_API_KEY: the runner controls it"),
    ({"agent": "robot"}, "unknown agent 'robot'"),
]


@pytest.mark.parametrize("config, message", BAD, ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(BAD)])
def test_client_rejects_a_bad_config_before_the_insert(db_url, queue, config, message):
    with psycopg.connect(db_url) as conn:
        with pytest.raises(InvalidJob) as err:
            client.enqueue(conn, prompt="p", config=config)
    assert message in str(err.value)
    assert queue.list() == []


def test_client_works_inside_a_sqlalchemy_transaction(db_url, queue):
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(db_url))
    try:
        with engine.connect() as conn:
            with conn.begin() as tx:
                job = client.enqueue(conn, prompt="rolled back", config={"agent": "stub"})
                tx.rollback()
        assert queue.get(job.id) is None  # the caller's rollback took the job with it
        with engine.begin() as conn:
            job = client.enqueue(conn, prompt="committed", config={"agent": "stub"})
        assert queue.get(job.id)["prompt"] == "committed"
    finally:
        engine.dispose()


def test_cli_validate_exit_codes():
    env = {"PATH": "/usr/bin:/bin"}
    good = cli("validate", "--config", json.dumps(GOOD), env=env)
    assert good.returncode == 0, good.stderr
    bad = cli("validate", "--config", '{"agent": "codex", "allowed_tools": ["Edit"]}', env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "runner validate: config.allowed_tools is not supported for agent 'codex'"
    stdin = cli("validate", "--config", "-", env=env, stdin='{"max_turns": 0}')
    assert stdin.returncode == 2 and "config.max_turns must be a whole number from 1 to 500, got 0" in stdin.stderr
    garbage = cli("validate", "--config", "{nope", env=env)
    assert garbage.returncode == 2 and "not valid JSON" in garbage.stderr


def test_cli_enqueue_says_what_is_wrong_and_inserts_nothing(runner_env, queue):
    proc = cli("enqueue", "--prompt", "p", "--config", '{"agent": "stub", "timeout_s": "60"}',
               env=runner_env)
    assert proc.returncode == 2
    assert "config.timeout_s must be a whole number of seconds from 1 to 604800, got '60'" in proc.stderr
    assert queue.list() == []
