"""The one exception root of threadteam.

    ThreadteamError
    ├── TeamFileError          a team file is broken (file, line, problem)
    ├── ToolError              a tool is misconfigured (not: a tool call that failed)
    ├── ModelError             a model call failed; the run pauses and can be retried
    │   ├── MissingCredentials a provider's key variable is not set
    │   ├── ModelAuthError     the provider refused the key
    │   └── ModelHTTPError     the provider answered with an error (status, retryable)
    │       ├── ModelConnectionError  no connection, or it dropped mid-answer (`mid_answer`)
    │       └── ModelTimeout          no answer, or no more of it, within `seconds`
    └── (bot.errors)           StoreError, ConflictError, ConfigError, ...

Signals the engine raises on purpose are not errors and live beside the events.
Messages are sentences a person can act on; they never contain secrets.
"""

from __future__ import annotations


class ThreadteamError(Exception):
    """Root of every error threadteam raises on purpose."""


class TeamFileError(ThreadteamError):
    """A team file that cannot be used: names the file, the line and the problem."""

    def __init__(self, file: str, line: int | None, problem: str) -> None:
        self.file = file
        self.line = line
        self.problem = problem
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {problem}")


class ToolError(ThreadteamError):
    """A tool that cannot be registered or found."""


class ModelError(ThreadteamError):
    """A model call failed; the run pauses and `retry` tries again."""

    retryable: bool = True


class MissingCredentials(ModelError):
    """A provider was chosen but its key variable is not set."""

    retryable = False

    def __init__(self, provider: str, variable: str) -> None:
        self.provider = provider
        self.variable = variable
        super().__init__(
            f"{provider} needs an API key: set the {variable} environment variable "
            f"(or choose another model, e.g. THREADTEAM_MODEL=rehearsal)."
        )


class ModelAuthError(ModelError):
    """The provider refused the credentials."""

    retryable = False


class ModelHTTPError(ModelError):
    """The provider answered with an error after retries were used up."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = True) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message)


class ModelConnectionError(ModelHTTPError):
    """The provider could not be reached, or the connection dropped while it answered."""

    def __init__(self, message: str, *, mid_answer: bool) -> None:
        self.mid_answer = mid_answer
        super().__init__(message, status=None, retryable=True)


class ModelTimeout(ModelHTTPError):
    """The provider did not answer (or fell silent mid-answer) within `seconds`."""

    def __init__(self, message: str, *, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(message, status=None, retryable=True)
