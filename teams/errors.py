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

__all__ = [
    "MissingCredentials", "ModelAuthError", "ModelConnectionError", "ModelError", "ModelHTTPError",
    "ModelTimeout", "TeamFileError", "ThreadteamError", "ToolError",
]


class ThreadteamError(Exception):
    """Root of every error threadteam raises on purpose."""


class TeamFileError(ThreadteamError):
    """A team file that cannot be used: names the file, the line and the problem.

    A file with several problems carries them all in `problems` ((line, problem)
    pairs, in the file's order) and says each on a line of its own; `line` and
    `problem` are the first.
    """

    def __init__(self, file: str, line: int | None, problem: str,
                 more: tuple[tuple[int | None, str], ...] = ()) -> None:
        self.file = file
        self.line = line
        self.problem = problem
        self.problems: tuple[tuple[int | None, str], ...] = ((line, problem), *more)
        super().__init__("\n".join(f"{file}:{at}: {what}" if at else f"{file}: {what}"
                                   for at, what in self.problems))

    @classmethod
    def of(cls, file: str, problems: list[tuple[int | None, str]]) -> TeamFileError:
        """One error for every problem of `file`, sorted by line (a file-wide one first)."""
        ordered = sorted(dict.fromkeys(problems), key=lambda p: p[0] or 0)
        (line, problem), *more = ordered
        return cls(file, line, problem, tuple(more))


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
