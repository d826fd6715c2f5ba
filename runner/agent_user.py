"""Who the agent runs as: a uid of its own (the container's default), or the runner's.

The agent runs untrusted instructions, so in the container it runs under a different uid
from the runner: it then cannot read the runner's process environments, logs, state or
mirrors, and whatever it leaves running can be found by its uid, which it cannot shed.

``RUNNER_AGENT_USER`` names that user (a name from the passwd database, a uid, or
``uid:gid``). The runner needs CAP_SETUID/CAP_SETGID to start processes as it and CAP_KILL
to signal them; as root it has both. When it is unset, or names the runner's own uid, the
agent shares the runner's uid: the runner says so once at start, and with
``RUNNER_REQUIRE_AGENT_ISOLATION=true`` it refuses to run that way.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from runner.errors import SettingsError


@dataclass(frozen=True)
class AgentUser:
    uid: int
    gid: int
    name: str

    @property
    def isolated(self) -> bool:
        """True when the agent runs under a uid other than the runner's."""
        return self.uid != os.geteuid()

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` to be started as this user, with none of the runner's privileges.

        A non-root runner holds CAP_SETUID/SETGID/KILL/CHOWN as *ambient* capabilities, and
        a plain setuid (subprocess's ``user=``) keeps them through exec: the agent could
        setuid back to the runner. ``setpriv`` switches the uid and group, drops the
        supplementary groups and clears the inheritable and ambient sets, so the agent's
        program starts with no capability at all.
        """
        if not self.isolated:
            return list(argv)
        return [setpriv_path(), f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--inh-caps=-all", "--ambient-caps=-all", "--", *argv]


def setpriv_path() -> str:
    """util-linux's setpriv, which the isolated agent is started through."""
    found = shutil.which("setpriv") or next(
        (p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.access(p, os.X_OK)), None)
    if found is None:
        raise SettingsError("RUNNER_AGENT_USER is set, but setpriv (util-linux) is not "
                            "installed: the runner needs it to start the agent as that user")
    return found


def resolve(spec: str | None) -> AgentUser:
    """The agent's user from ``RUNNER_AGENT_USER``; the runner's own when unset."""
    if spec is None or not spec.strip():
        uid = os.geteuid()
        return AgentUser(uid, os.getegid(), _name_of(uid))
    spec = spec.strip()
    uid_text, _, gid_text = spec.partition(":")
    if uid_text.isdigit():
        uid = int(uid_text)
        try:
            entry = pwd.getpwuid(uid)
            default_gid, name = entry.pw_gid, entry.pw_name
        except KeyError:
            default_gid, name = uid, str(uid)
    else:
        try:
            entry = pwd.getpwnam(uid_text)
        except KeyError:
            raise SettingsError(f"RUNNER_AGENT_USER: no user named {uid_text!r} on this host "
                                f"(give a user name, a uid or uid:gid)") from None
        uid, default_gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    if gid_text and not gid_text.isdigit():
        raise SettingsError(f"RUNNER_AGENT_USER: the group after ':' must be a number, got {gid_text!r}")
    gid = int(gid_text) if gid_text else default_gid
    if uid == 0:
        raise SettingsError("RUNNER_AGENT_USER: the agent must not run as root (uid 0)")
    return AgentUser(uid, gid, name)


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
