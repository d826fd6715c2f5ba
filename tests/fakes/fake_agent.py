"""A small fake agent for fast tests, run as the ``command`` agent.

It reads its job from ``$RUNNER_PAYLOAD`` and does what ``config.fake`` says, in order:
``stdout`` / ``stderr`` lines, ``write`` files, ``commit``, ``write_after`` (files written
after the commit, left uncommitted), ``run`` (shell commands), ``log_to`` (appends the branch's
subjects and the prompt at start), ``sleep_unless_exists`` (a file: hang unless it is
there at start), ``blocked`` (writes BLOCKED.md),
``grandchild`` (starts a process that tries to outlive it, writing its pid to a file),
``escapee`` ({"pidfile", "after", "path"}: a process in a session of its own, as Claude
Code runs its Bash tool, that writes ``path`` after ``after`` seconds), ``raw_stdout``
(hex strings written as raw bytes: NUL, invalid UTF-8), ``big_line`` (one stdout line of
that many bytes, written in chunks), ``sleep`` seconds, ``then_stdout`` lines and
``then_sleep`` seconds, then exits with ``exit`` (default 0). ``pidfile`` records its own pid.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

payload = json.loads(Path(os.environ["RUNNER_PAYLOAD"]).read_text())
spec = (payload.get("config") or {}).get("fake") or {}

if spec.get("log_to"):  # what this attempt starts from: the branch's subjects, its prompt
    subjects = subprocess.run(["git", "log", "--format=%s"], capture_output=True,
                              text=True).stdout.split("\n")
    with open(spec["log_to"], "a") as fh:
        fh.write(json.dumps({"subjects": [s for s in subjects if s],
                             "prompt": os.environ.get("RUNNER_PROMPT", "")}) + "\n")
# A first attempt (the file is not there yet) hangs; a later one that continues does not.
hang = bool(spec.get("sleep_unless_exists")) and not Path(spec["sleep_unless_exists"]).exists()
if spec.get("pidfile"):
    Path(spec["pidfile"]).write_text(str(os.getpid()))
for line in spec.get("stdout", []):
    print(line if isinstance(line, str) else json.dumps(line), flush=True)
for line in spec.get("stderr", []):
    print(line, file=sys.stderr, flush=True)
for name, text in (spec.get("write") or {}).items():
    Path(name).write_text(text)
if spec.get("commit"):
    subprocess.run(["git", "add", "-A"], check=True)
    if subprocess.run(["git", "diff", "--cached", "--quiet"]).returncode:  # something staged
        subprocess.run(["git", "commit", "-q", "-m", spec["commit"]], check=True)
for name, text in (spec.get("write_after") or {}).items():  # left uncommitted
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    Path(name).write_text(text)
for command in spec.get("run") or []:  # shell commands in the worktree, in order
    subprocess.run(command, shell=True, check=True)
if spec.get("blocked"):
    Path("BLOCKED.md").write_text(spec["blocked"])
if spec.get("grandchild"):
    # Ignores SIGTERM and detaches its output: only a group SIGKILL ends it.
    code = ("import os,signal,sys,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);"
            f"open({spec['grandchild']!r},'w').write(str(os.getpid()));time.sleep(600)")
    subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
if spec.get("escapee"):
    e = spec["escapee"]
    code = ("import os,signal,sys,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);"
            f"open({e['pidfile']!r},'w').write(str(os.getpid()));time.sleep({float(e['after'])});"
            f"open({e['path']!r},'w').write('the old attempt lived on')")
    subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
for raw in spec.get("raw_stdout", []):
    sys.stdout.buffer.write(bytes.fromhex(raw) + b"\n")
    sys.stdout.buffer.flush()
if spec.get("big_line"):
    left, chunk = int(spec["big_line"]), b"x" * (1 << 20)
    while left > 0:
        sys.stdout.buffer.write(chunk[:left])
        left -= len(chunk)
    sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()
if spec.get("env_dump"):
    Path(spec["env_dump"]).write_text(json.dumps(dict(os.environ)))
if spec.get("until_exists"):  # runs until the test lets it finish (at most 5 minutes)
    deadline = time.monotonic() + 300
    while not Path(spec["until_exists"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
time.sleep(float(spec.get("sleep", 0)) + (600 if hang else 0))
for line in spec.get("then_stdout", []):  # after the sleep: output while the test watches
    print(line if isinstance(line, str) else json.dumps(line), flush=True)
time.sleep(float(spec.get("then_sleep", 0)))
print(json.dumps({"fake": "done"}), flush=True)
sys.exit(int(spec.get("exit", 0)))
