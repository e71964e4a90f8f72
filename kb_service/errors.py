"""One error model for every caller: each error the service reports carries its HTTP status and CLI exit code.

The HTTP app has one handler for `KbError` (a JSON body naming the field at fault) and the `kb` command one
(a one-line message and the exit code), so a new failure is reported correctly everywhere by choosing the
right base class here rather than by adding handlers.
"""

from __future__ import annotations

from typing import Any

EXIT_INPUT = 2  # bad input, a refused operation or an unavailable engine: the caller can act on the message
EXIT_REFUSED_BY_GATES = 3  # a reload that ran and was stopped by its gates: the run report says why


class KbError(Exception):
    """Root of the errors the service reports to its callers rather than logging as internal failures."""

    http_status = 500
    exit_code = EXIT_INPUT

    def __init__(self, message: str, field: str | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_json(self) -> dict:
        """The body every error response has: status, message, the field at fault and any details."""
        return error_body(self.http_status, self.message, self.field, **self.details)


def error_body(status: int, message: str, field: str | None = None, **details: Any) -> dict:
    """The JSON error shape of the API, for KbErrors and for the HTTP layer's own refusals alike."""
    body: dict[str, Any] = {"status": status, "message": message}
    if field:
        body["field"] = field
    body.update(details)
    return {"error": body}


class InputError(KbError):
    """Bad input from the caller (a parameter, a body, a file); `field` names what is wrong."""

    http_status = 400


class NotFoundError(KbError):
    """The named thing (a record, a version) does not exist."""

    http_status = 404


class AuthError(KbError):
    """A call without a valid API key for its role (401) or to a role no key is configured for (403);
    `challenge` asks a browser to prompt for credentials."""

    http_status = 401

    def __init__(self, message: str, status: int = 401, challenge: bool = False):
        super().__init__(message, field="X-API-Key", code="unauthorized" if status == 401 else "role_disabled")
        self.http_status = status
        self.challenge = challenge


class TooManyRequestsError(KbError):
    """A caller that must wait `retry_after_s` seconds before asking again."""

    http_status = 429

    def __init__(self, message: str, retry_after_s: int, field: str | None = None, code: str = "locked_out"):
        super().__init__(message, field, retry_after_s=retry_after_s, code=code)
        self.retry_after_s = retry_after_s


class ConflictError(KbError):
    """An operation that cannot run now (another reload or build holds the lock, a config that cannot go
    live); nothing was changed."""

    http_status = 409


class StorageError(KbError):
    """The data directory cannot take the write (disk full, read-only, over quota); nothing was changed."""

    http_status = 507


class UnavailableError(KbError):
    """The service cannot answer now: no version served yet, or the search engine not answering."""

    http_status = 503

