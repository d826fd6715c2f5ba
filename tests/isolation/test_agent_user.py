"""Issue 11, first acceptance test (the process part): the runner as a non-root user with
only CAP_SETUID, CAP_SETGID, CAP_KILL and CAP_CHOWN, the agent under a second user, and a
hostile agent that reads whatever it can. No canary secret may reach it."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root (to create users) and setpriv")

HOSTILE = Path(__file__).parent / "hostile_agent.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # the test's own interpreter may sit under /root (0700)
DB_CANARY, TOKEN_CANARY, KEY_CANARY = "dbpw-canary-7f3a", "ghp_tokencanary9b2c", "sk-ant-keycanary-41d0"
CAPS = "+setuid,+setgid,+kill,+chown"


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        name], check=True)
        return pwd.getpwnam(name)


@pytest.fixture
def users():
    return _user("rtest-runner"), _user("rtest-agent")


def test_a_hostile_agent_under_its_own_uid_reads_no_runner_secret(db_url, runner_env, queue, users):
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("no system python3 readable by other users")
    runner_user, agent_user = users
    base = Path(tempfile.mkdtemp(prefix="isolation-"))
    try:
        os.chmod(base, 0o711)
        home = base / "runner-home"
        findings_dir = base / "findings"
        for d, owner, mode in ((home, runner_user, 0o700), (findings_dir, agent_user, 0o700)):
            d.mkdir()
            os.chown(d, owner.pw_uid, owner.pw_gid)
            os.chmod(d, mode)
        # The runner's directories as an operator may have left them (open to all): the
        # runner closes them itself at start (logs, state, cache 0700; the job root 0711).
        for sub, mode in (("jobs", 0o755), ("cache", 0o755), ("logs", 0o755), ("state", 0o755)):
            (base / sub).mkdir(mode=mode)
            os.chmod(base / sub, mode)
            os.chown(base / sub, runner_user.pw_uid, runner_user.pw_gid)
        findings = findings_dir / "found.json"
        url = db_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_CANARY}@", 1)
        assert DB_CANARY in url, db_url
        job = queue.enqueue(prompt="p", config={"agent": "command"})

        env = {**runner_env, "DATABASE_URL": url,
               **{f"RUNNER_{d.upper()}": str(base / d.split("_")[0]) for d in ("job_root", "cache_dir", "log_dir", "state_dir")}}
        env["RUNNER_JOB_ROOT"], env["RUNNER_CACHE_DIR"] = str(base / "jobs"), str(base / "cache")
        env["RUNNER_LOG_DIR"], env["RUNNER_STATE_DIR"] = str(base / "logs"), str(base / "state")
        site = next((Path(REPO) / ".venv" / "lib").glob("python3*/site-packages"))
        env.update({
            "HOME": str(home), "PYTHONPATH": f"{REPO}:{site}",
            "RUNNER_AGENT_USER": agent_user.pw_name, "RUNNER_REQUIRE_AGENT_ISOLATION": "true",
            "RUNNER_GIT_TOKEN": TOKEN_CANARY, "ANTHROPIC_API_KEY": KEY_CANARY,
            "RUNNER_AGENT_COMMAND": f"/usr/bin/env FINDINGS={findings} {SYSTEM_PYTHON} {HOSTILE} "
                                    f"{base / 'logs'} {base / 'state'} {base / 'cache'} {home}",
        })
        proc = subprocess.run(
            ["setpriv", f"--reuid={runner_user.pw_uid}", f"--regid={runner_user.pw_gid}",
             "--clear-groups", f"--inh-caps={CAPS}", f"--ambient-caps={CAPS}",
             f"--bounding-set=-all,{CAPS}", SYSTEM_PYTHON, "-m", "runner.one_job"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL)
        row = queue.get(job["id"])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert row["status"] == "succeeded", (row["status"], row["error"], proc.stdout[-3000:])
        found = json.loads(findings.read_text())
        read = {k: v for k, v in found.items()
                if k not in ("own environment", "own capabilities", "became")}
        assert any(k.startswith("/proc/") for k in read)  # it did read what it may (its own)
        leaked = {k: c for k, v in read.items()
                  for c in (DB_CANARY, TOKEN_CANARY, KEY_CANARY) if c in v}
        assert leaked == {}
        # It holds no capability at all: not the runner's setuid/kill/chown, so it cannot
        # become the runner (or root) to read what its own uid may not.
        assert "became" not in found, found.get("became")
        caps = dict(line.split(":\t") for line in found["own capabilities"].splitlines())
        assert all(int(caps[k], 16) == 0 for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")), caps
        own = found["own environment"]
        assert not any(c in own for c in (DB_CANARY, TOKEN_CANARY, KEY_CANARY))
        # Nothing of the runner's directories was even listable.
        listed = [k for k in read for d in ("logs", "state", "cache") if k.startswith(str(base / d))]
        assert listed == []
        assert {d: (base / d).stat().st_mode & 0o777 for d in ("jobs", "cache", "logs", "state")} \
            == {"jobs": 0o711, "cache": 0o700, "logs": 0o700, "state": 0o700}
        assert str(home) not in read
    finally:
        shutil.rmtree(base, ignore_errors=True)
