"""The prompt a job gives its agent: ``job.prompt``, or a template for its ``kind``.

Templates are ``runner/prompts/<kind>.md`` (or the same name in RUNNER_PROMPTS_DIR, which
wins); ``{payload_path}`` and ``{job_id}`` are filled in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from runner.errors import JobInputError
from runner.settings import Settings

_KIND = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_PROMPT_CHARS = 100_000  # argv strings are limited to 128 KiB on Linux


def template_for(kind: str) -> Path | None:
    if not _KIND.match(kind):
        return None
    dirs = [Path(os.environ["RUNNER_PROMPTS_DIR"])] if os.environ.get("RUNNER_PROMPTS_DIR") else []
    dirs.append(Path(__file__).parent)
    for d in dirs:
        candidate = d / f"{kind}.md"
        if candidate.is_file():
            return candidate
    return None


def build_prompt(job: dict[str, Any], settings: Settings) -> str:
    prompt = job.get("prompt")
    if not isinstance(prompt, str):
        raise JobInputError("prompt must be text")
    if not prompt.strip():
        template = template_for(str(job.get("kind") or ""))
        if template is None:
            raise JobInputError(f"the job has an empty prompt and there is no prompt template for kind {job.get('kind')!r}")
        payload_path = settings.job_root / str(job["id"]) / "payload.json"
        prompt = template.read_text().replace("{payload_path}", str(payload_path)) \
            .replace("{job_id}", str(job["id"]))
    if "\x00" in prompt:
        raise JobInputError("the prompt contains a NUL character")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise JobInputError(f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are allowed")
    return prompt
