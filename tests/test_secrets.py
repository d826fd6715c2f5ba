"""runner/secrets.py and the NAME_FILE settings: pure decisions, in-process."""

from __future__ import annotations

import json
import os

import pytest

from runner import secrets
from runner.errors import SettingsError
from runner.secrets import Redactor, safe_json, safe_text, secret_values
from runner.settings import SECRET_FILE_SETTINGS, load_secret_files, load_settings


@pytest.mark.parametrize("token", [
    "sk-ant-api03-" + "a" * 40, "ghp_" + "b" * 36, "github_pat_" + "c" * 40, "glpat-" + "d" * 20,
    "AKIA" + "E" * 16, "sk-proj-" + "f" * 30, "AIza" + "g" * 35,
])
def test_token_shapes_are_redacted(token):
    assert token not in Redactor()(f"x {token} y")


def test_bearer_and_url_passwords():
    r = Redactor()
    assert r("Authorization: Bearer abc.def-123456") == "Authorization: Bearer ***"
    assert r("postgresql://u:hunter22@db:5432/x") == "postgresql://u:***@db:5432/x"


def test_held_secrets_and_their_json_forms():
    r = Redactor(["pa\"ss-word", "short"])
    assert r(json.dumps({"a": 'x pa"ss-word y'})) == json.dumps({"a": "x *** y"})
    assert r("short") == "short"  # too short to redact without eating words


def test_secret_values_take_the_database_password():
    env = {"DATABASE_URL": "postgresql://u:s3cr3t-pw@h/db", "ANTHROPIC_API_KEY": "k" * 10}
    values = secret_values(None, env)
    assert "s3cr3t-pw" in values and "k" * 10 in values


def test_storable_and_capped():
    assert safe_text("a\x00b\ud800c", redactor=Redactor()) == "ab\ufffdc"
    text = safe_text("y" * 100, limit=10, redactor=Redactor())
    assert text.startswith("y" * 10) and "90 more characters cut" in text
    value = safe_json({"k\x00": ["\udcff", float("nan"), 1, True, None]}, redactor=Redactor())
    assert value == {"k": ["\ufffd", None, 1, True, None]}


# -- NAME_FILE ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", SECRET_FILE_SETTINGS)
def test_each_secret_reads_its_file(name, tmp_path):
    f = tmp_path / "s"
    f.write_text("the-value\n")
    env = {f"{name}_FILE": str(f)}
    load_secret_files(env)
    assert env[name] == "the-value"


def test_unreadable_empty_and_doubly_set(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for env, fragment in (
        ({"RUNNER_GIT_TOKEN_FILE": str(tmp_path / "missing")}, "RUNNER_GIT_TOKEN_FILE: cannot read"),
        ({"ANTHROPIC_API_KEY_FILE": str(empty)}, f"ANTHROPIC_API_KEY_FILE: the file {empty} is empty"),
        ({"GEMINI_API_KEY_FILE": str(tmp_path)}, "GEMINI_API_KEY_FILE: cannot read"),
        ({"OPENAI_API_KEY_FILE": str(empty), "OPENAI_API_KEY": "x"}, "set only one"),
    ):
        with pytest.raises(SettingsError, match="invalid settings") as info:
            load_secret_files(env)
        assert fragment in str(info.value)


def test_database_url_file_through_load_settings(tmp_path, monkeypatch):
    f = tmp_path / "db"
    f.write_text("postgresql://u:file-pw-123@h/db\n")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("RUNNER_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL_FILE", str(f))
    settings = load_settings()
    assert settings.database_url.get_secret_value() == "postgresql://u:file-pw-123@h/db"
    assert "file-pw-123" in secret_values(settings)
    os.environ.pop("DATABASE_URL", None)


def test_the_content_of_a_bad_file_is_never_shown(tmp_path, monkeypatch):
    f = tmp_path / "db"
    f.write_text("notaurl-with-secret-xyz\n")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL_FILE", str(f))
    monkeypatch.setenv("RUNNER_LEASE_SECONDS", "nope")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "secret-xyz" not in str(info.value)
    os.environ.pop("DATABASE_URL", None)


def test_install_makes_one_redactor_for_the_process(monkeypatch):
    monkeypatch.setenv("RUNNER_GIT_TOKEN", "tok-en-123456")
    secrets.install(None)
    assert secrets.redact("a tok-en-123456 b") == "a *** b"
    secrets._current = None
