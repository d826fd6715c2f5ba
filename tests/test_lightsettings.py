"""`runner logs` reads its settings without pydantic (runner/lightsettings.py): the same
answers as `Settings` for what it reads, and a process that never imports the heavy layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runner.errors import SettingsError
from runner.lightsettings import load_log_settings
from runner.settings import load_settings
from tests.conftest import REPO
from tests.test_health import cli_env, runner_cli
from tests.test_logview import JOB, make_log, runner_line

CASES = {
    "defaults": {},
    "relative dir": {"RUNNER_LOG_DIR": "some/where"},
    "home dir": {"RUNNER_LOG_DIR": "~/runner-logs"},
    "empty is unset": {"RUNNER_LOG_DIR": "", "DATABASE_URL": ""},
    "lower-case name": {"runner_log_dir": "/srv/lower"},
    "DATABASE_URL first": {"DATABASE_URL": "postgresql://a@h/one",
                           "RUNNER_DATABASE_URL": "postgresql://b@h/two"},
    "the alias alone": {"RUNNER_DATABASE_URL": "postgres://b@h/two"},
    "empty DATABASE_URL, alias set": {"DATABASE_URL": "", "RUNNER_DATABASE_URL": "postgresql+psycopg://c@h/3"},
}


@pytest.mark.parametrize("env", CASES.values(), ids=CASES.keys())
def test_the_light_reader_answers_as_settings_do(env, monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.upper().startswith("RUNNER_") or name.upper().startswith("DATABASE_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    full, light = load_settings(database_optional=True), load_log_settings()
    assert light.log_dir == full.log_dir
    assert light.has_database == full.has_database
    assert light.database_url.get_secret_value() == full.database_url.get_secret_value()
    if full.has_database:
        assert light.dsn == full.dsn


def test_a_database_url_from_a_file_and_never_in_the_repr(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "RUNNER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    secret = tmp_path / "db"
    secret.write_text("postgresql://u:hunter2@h/db\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    light = load_log_settings()
    assert light.dsn == "postgresql://u:hunter2@h/db"
    assert "hunter2" not in repr(light) and "hunter2" not in repr(light.database_url)
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "missing"))
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(SettingsError, match="DATABASE_URL_FILE: cannot read"):
        load_log_settings()


def test_runner_logs_honours_the_log_dir_without_the_heavy_imports(tmp_path):
    logs = tmp_path / "elsewhere"
    make_log(logs, JOB, runner_line("job_claimed", attempt=2) + "\n")
    env = cli_env(tmp_path, RUNNER_LOG_DIR=str(logs))
    code = ("import sys\nfrom runner.cli import main\nrc = main(sys.argv[1:])\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pydantic', 'pydantic_settings', 'psycopg', 'sqlalchemy', 'structlog'})\n"
            "print('HEAVY', *heavy)\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, "logs", JOB[:8]], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "job_claimed attempt=2" in lines[0]
    assert lines[-1] == "HEAVY", lines[-1]
    # Elsewhere (the default ./logs of the checkout) there is no such job.
    assert runner_cli(cli_env(tmp_path), "logs", JOB[:8]).returncode == 1


def test_runner_logs_with_a_bad_database_url_says_so(tmp_path):
    make_log(tmp_path / "logs", JOB, json.dumps({"type": "system", "subtype": "x"}) + "\n")
    proc = runner_cli(cli_env(tmp_path, DATABASE_URL="mysql://u:pw@h/db"), "logs", JOB)
    assert proc.returncode == 1
    assert proc.stderr.startswith("runner: ") and "pw" not in proc.stderr
