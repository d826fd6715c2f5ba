"""A hostile agent: it tries to read every process's environment and command line, and
to list and read the runner's log, state and cache directories, then writes what it got
(as text) to $FINDINGS. Run as the agent's own user by tests/isolation/test_agent_user.py."""

import json
import os
import sys
from pathlib import Path

found: dict[str, str] = {}


def grab(path: str) -> None:
    try:
        if os.path.isdir(path):
            found[path] = "\n".join(os.listdir(path))
            for name in os.listdir(path):
                grab(os.path.join(path, name))
        else:
            with open(path, "rb") as fh:
                found[path] = fh.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        pass


for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        grab(f"/proc/{pid}/environ")
        grab(f"/proc/{pid}/cmdline")
for d in sys.argv[1:]:
    grab(d)
# Whatever privilege it was started with: capabilities, and whether it can become
# anybody else (the runner's uid, root) to read what its own uid may not.
status = Path("/proc/self/status").read_text()
found["own capabilities"] = "\n".join(l for l in status.splitlines() if l.startswith("Cap"))
def owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:  # the process ended between the listing and the look
        return None


uids = {owner(p) for p in os.listdir("/proc") if p.isdigit()} - {None}
for uid in sorted(uids | {0}):
    if uid == os.getuid():
        continue
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
        except OSError:
            pass
        try:
            os.setuid(uid)
            os._exit(0)
        except OSError:
            os._exit(1)
    _, code = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(code) == 0:
        found.setdefault("became", "")
        found["became"] += f"{uid} "
found["own environment"] = json.dumps(dict(os.environ))
Path(os.environ["FINDINGS"]).write_text(json.dumps(found))
print(json.dumps({"hostile": "done", "read": len(found)}), flush=True)
