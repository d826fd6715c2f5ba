"""The agent's word is not enough to park a worker.

The agent's output is under the agent's control: a tool can write a forged
``api_retry`` 401 line or a ``rate_limit_event`` straight into the CLI's stdout. Before the
iteration exits 3 (``TOKEN_EXPIRED``) the runner asks the API itself, with a request that
costs nothing (a model list: ``GET /v1/models`` for Claude and Codex, ``/v1beta/models``
for Gemini, with the same credential and base URL the agent had). Only a 401/403 confirms; anything else turns the verdict into a retry of the job, and the worker
goes on. A usage-limit reset is believed only within ``RUNNER_MAX_USAGE_WAIT_SECONDS``.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import structlog

from runner.outcome import Outcome, Verdict

log = structlog.get_logger("runner.credcheck")

NOT_CONFIRMED = "the agent's output said the credential was rejected, but the API accepted it"
UNCHECKED = ("the agent's output said the credential was rejected, but the runner could not "
             "confirm it with the API")
CHECK_TIMEOUT_SECONDS = 10.0
DEFAULT_USAGE_WAIT = timedelta(hours=1)


def claude_credential_status(env: dict[str, str], timeout: float = CHECK_TIMEOUT_SECONDS) -> str:
    """rejected | accepted | unknown: GET {ANTHROPIC_BASE_URL}/v1/models with the agent's
    own credential."""
    base = (env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com").rstrip("/")
    headers = {"anthropic-version": "2023-06-01"}
    if env.get("CLAUDE_CODE_OAUTH_TOKEN"):
        headers["authorization"] = f"Bearer {env['CLAUDE_CODE_OAUTH_TOKEN']}"
        headers["anthropic-beta"] = "oauth-2025-04-20"
    elif env.get("ANTHROPIC_API_KEY"):
        headers["x-api-key"] = env["ANTHROPIC_API_KEY"]
    else:
        return "unknown"  # a login in the agent's HOME: nothing the runner can present
    return _status(f"{base}/v1/models?limit=1", headers, timeout)


def codex_credential_status(env: dict[str, str], timeout: float = CHECK_TIMEOUT_SECONDS) -> str:
    """GET {OPENAI_BASE_URL}/models with the agent's API key (OpenAI's base includes /v1)."""
    key = env.get("CODEX_API_KEY") or env.get("OPENAI_API_KEY")
    if not key:
        return "unknown"  # a ChatGPT login in CODEX_HOME
    base = (env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
    return _status(f"{base}/models", {"authorization": f"Bearer {key}"}, timeout)


def gemini_credential_status(env: dict[str, str], timeout: float = CHECK_TIMEOUT_SECONDS) -> str:
    """GET {GOOGLE_GEMINI_BASE_URL}/v1beta/models with the agent's API key."""
    key = env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")
    if not key:
        return "unknown"  # a Google login, or Vertex credentials
    base = (env.get("GOOGLE_GEMINI_BASE_URL") or
            "https://generativelanguage.googleapis.com").rstrip("/")
    return _status(f"{base}/v1beta/models?pageSize=1", {"x-goog-api-key": key}, timeout)


CHECKS = {"claude": claude_credential_status, "codex": codex_credential_status,
          "gemini": gemini_credential_status}


def _status(url: str, headers: dict[str, str], timeout: float) -> str:
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return "accepted" if 200 <= response.status < 300 else "unknown"
    except urllib.error.HTTPError as exc:
        return "rejected" if exc.code in (401, 403) else "unknown"
    except (OSError, ValueError) as exc:
        log.warning("credential_check_failed", error=str(exc))
        return "unknown"


def confirm(outcome: Outcome, agent: str, env: dict[str, str], max_usage_wait: float) -> Outcome:
    """The outcome to act on: TOKEN_EXPIRED only when the API confirms it, USAGE_LIMIT only
    with a reset within the bound; otherwise a retry of the job that says why."""
    if outcome.verdict is Verdict.TOKEN_EXPIRED:
        # An agent without a check of its own (the operator's command) is not believed.
        check = CHECKS.get(agent)
        status = check(env) if check is not None else "unknown"
        log.info("credential_checked", status=status)
        if status != "rejected":
            reason = NOT_CONFIRMED if status == "accepted" else UNCHECKED
            return Outcome(Verdict.RETRY, reason=f"{reason} ({outcome.reason})",
                           result=outcome.result)
    if outcome.verdict is Verdict.USAGE_LIMIT:
        now = datetime.now(timezone.utc)
        reset = outcome.reset_at
        if reset is None:
            outcome.reset_at = now + min(DEFAULT_USAGE_WAIT, timedelta(seconds=max_usage_wait))
        elif reset <= now or reset > now + timedelta(seconds=max_usage_wait):
            log.warning("usage_limit_reset_not_believed", reset_at=reset.isoformat(),
                        max_wait_seconds=max_usage_wait)
            return Outcome(Verdict.RETRY, result=outcome.result, reason=(
                f"the agent's output said a usage limit resets at {reset.isoformat()}, "
                f"{'in the past' if reset <= now else 'beyond RUNNER_MAX_USAGE_WAIT_SECONDS'}; "
                f"not believed ({outcome.reason})"))
    return outcome
