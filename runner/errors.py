"""The runner's errors: a small hierarchy whose docstrings are the default messages.

Where an error lands decides what happens to the job:

* ``JobInputError`` — the job itself is wrong; it ends ``failed`` with the message.
* ``IterationError`` — the runner could not do its part; the claim is handed back
  (without using up an attempt) and the iteration exits 1 so the supervisor backs off.
* ``SettingsError`` — the operator's configuration is wrong; the process stops at start.
"""

from __future__ import annotations


class RunnerError(Exception):
    """Something went wrong in the runner."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class SettingsError(RunnerError):
    """The runner's settings are invalid."""


class JobInputError(RunnerError):
    """The job cannot run as it was given."""


class InvalidAgentConfig(JobInputError):
    """The job's agent configuration is invalid."""


class InvalidJob(RunnerError):
    """The job was not enqueued: it is not valid."""


class InvalidRepository(JobInputError):
    """The job's repository cannot be used."""


class InvalidRef(JobInputError):
    """The job's branch or base ref is not a valid git ref name."""


class RepositoryUnavailable(JobInputError):
    """The job's repository could not be cloned or fetched."""


class IterationError(RunnerError):
    """The iteration failed through no fault of the job; the claim was handed back."""


class AgentNotFound(IterationError):
    """The agent's program was not found; check the RUNNER_*_BIN settings and PATH."""


class DatabaseUnavailable(IterationError):
    """The database cannot be reached."""


class DatabaseWriteFailed(IterationError):
    """The database refused a write of the runner's; the claim is handed back."""


class DedupeKeyTaken(RunnerError):
    """The job cannot be sent round again: another unfinished job holds its dedupe_key."""


class ClaimLost(RunnerError):
    """This worker no longer holds the job's claim (its lease expired and another worker
    took it, or it was finished elsewhere); nothing more may be written for it."""
