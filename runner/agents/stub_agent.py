"""The built-in stub agent: prints what it would do, writes a file, commits it, exits 0.

Run as ``python -m runner.agents.stub_agent PROMPT`` in the job's working directory; it
goes through the same spawn, streaming and recording path as a real agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    prompt = argv[0] if argv else ""
    workdir = Path.cwd()
    print(f"stub agent: would ask a coding agent to: {prompt[:200]!r}", flush=True)
    print(f"stub agent: working in {workdir}", flush=True)
    note = workdir / "RUNNER_STUB.md"
    note.write_text(f"# Stub run\n\nJob {os.environ.get('RUNNER_JOB_ID', '?')}\n\n{prompt}\n")
    print(f"stub agent: wrote {note.name}", flush=True)
    committed = False
    if (workdir / ".git").exists():
        subprocess.run(["git", "add", "--", note.name], check=True, stdin=subprocess.DEVNULL)
        subprocess.run(["git", "commit", "-q", "-m", "stub: record the prompt"], check=True,
                       stdin=subprocess.DEVNULL)
        committed = True
        print("stub agent: committed it", flush=True)
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False,
                      "result": f"stub run done ({'committed' if committed else 'no repository'})",
                      "num_turns": 1, "total_cost_usd": 0.0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
