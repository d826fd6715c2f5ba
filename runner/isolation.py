"""The start-up check of who the agent runs as (issue: the agent under its own uid).

Run before anything is claimed: with ``RUNNER_REQUIRE_AGENT_ISOLATION`` and no uid of its
own for the agent, the iteration refuses (exit 1, a sentence saying why); without the
requirement it says once per worker that the agent shares the runner's uid and what that
exposes.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from runner.agent_user import AgentUser
from runner.errors import SettingsError

log = structlog.get_logger("runner.isolation")

SHARED_UID_EXPOSES = (
    "the agent runs under the runner's own uid: it can read the runner's logs, state, "
    "mirrors and every job's directory, signal the runner, and read the environment "
    "(DATABASE_URL, RUNNER_GIT_TOKEN, agent credentials) of any runner process that is not "
    "protected; set RUNNER_AGENT_USER to a user of its own to isolate it"
)


def check(agent: AgentUser, require: bool, state_dir: Path, worker_id: str) -> None:
    """Raise SettingsError when isolation is required and missing; warn once otherwise."""
    if agent.isolated:
        return
    if require:
        raise SettingsError(
            "RUNNER_REQUIRE_AGENT_ISOLATION is on, but the agent would run under the "
            f"runner's own uid ({agent.uid}): set RUNNER_AGENT_USER to another user "
            "(and give the runner CAP_SETUID, CAP_SETGID and CAP_KILL), or turn the "
            "requirement off")
    stamp = state_dir / f"shared_uid_warned.{worker_id}"
    if stamp.exists():
        return  # once per worker, not once per iteration
    log.warning("agent_shares_runner_uid", uid=agent.uid, exposes=SHARED_UID_EXPOSES)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    except OSError:
        pass


# The runner's own folders, closed to the agent's uid; the job root only traversable, so
# an agent reaches its own job directory by name but cannot list the others.
PRIVATE_MODES = {"log_dir": 0o700, "state_dir": 0o700, "cache_dir": 0o700, "job_root": 0o711}


def protect_dirs(settings) -> None:  # noqa: ANN001 - runner.settings.Settings
    """With the agent under its own uid, make (or tighten) the runner's folders so that it
    cannot read them, whatever mode an operator or an older version created them with."""
    if not settings.agent.isolated:
        return
    for field, mode in PRIVATE_MODES.items():
        path = Path(getattr(settings, field))
        try:
            path.mkdir(mode=mode, parents=True, exist_ok=True)
            if path.stat().st_mode & 0o777 != mode:
                path.chmod(mode)
        except OSError as exc:
            raise SettingsError(f"cannot make {path} private to the runner "
                                f"(RUNNER_{field.upper()}): {exc.strerror}") from exc
