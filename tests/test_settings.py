"""Settings: every bad value is named with what was expected; secrets are never echoed."""

import pytest

from runner.errors import SettingsError
from runner.settings import load_settings

BASE = {"DATABASE_URL": "postgresql://runner:pw@db/runner"}


@pytest.fixture
def env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("RUNNER_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    def set_env(**values: str) -> None:
        for name, value in {**BASE, **values}.items():
            monkeypatch.setenv(name, value)
    return set_env


@pytest.mark.parametrize("name, value, expected", [
    ("RUNNER_LEASE_SECONDS", "5m", "valid integer"),
    ("RUNNER_LEASE_SECONDS", "1", "greater than or equal to 2"),
    ("RUNNER_POLL_SECONDS", "0", "greater than 0"),
    ("RUNNER_ALLOWED_AGENTS", "claude,skynet", "unknown agent(s) ['skynet']"),
    ("RUNNER_ALLOWED_PERMISSION_MODES", "yolo", "unknown mode(s) ['yolo']"),
    ("RUNNER_ALLOW_FILE_REPOS", "perhaps", "valid boolean"),
    ("RUNNER_LOG_FORMAT", "xml", "'auto', 'json' or 'console'"),
    ("RUNNER_QUEUES", " , ", "at least 1 item"),
])
def test_a_bad_value_names_the_setting_and_the_expectation(env, name, value, expected):
    env(**{name: value})
    with pytest.raises(SettingsError) as err:
        load_settings()
    line = next(l for l in str(err.value).splitlines() if l.strip().startswith(name + ":"))
    assert expected in line


def test_missing_database_url_is_named(env, monkeypatch):
    env()
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "  DATABASE_URL: required but not set" in str(err.value).splitlines()


def test_lists_are_comma_separated_and_paths_absolute(env):
    env(RUNNER_QUEUES="fast, slow ,", RUNNER_JOB_ROOT="rel/jobs")
    settings = load_settings()
    assert settings.queues == ["fast", "slow"]
    assert settings.job_root.is_absolute()


def test_secret_values_never_appear_in_the_error(env):
    env(RUNNER_GIT_TOKEN="ghp_supersecret", DATABASE_URL="postgresql://u:hunter22@db/x",
        RUNNER_LEASE_SECONDS="x")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "hunter22" not in str(err.value) and "supersecret" not in str(err.value)
