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
    code = "internal"  # the machine-readable kind a client branches on; a raise may name a narrower one

    def __init__(self, message: str, field: str | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_json(self) -> dict:
        """The body every error response has: status, code, message, the field at fault and any details."""
        return error_body(self.http_status, self.message, self.field, **{"code": self.code, **self.details})


STATUS_CODES = {400: "invalid_parameter", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "body_too_large", 422: "unprocessable",
                429: "rate_limited", 500: "internal", 503: "unavailable", 507: "storage_unavailable"}


def error_body(status: int, message: str, field: str | None = None, **details: Any) -> dict:
    """The JSON error shape of the API, for KbErrors and for the HTTP layer's own refusals alike; `code`
    defaults to the status's general kind."""
    body: dict[str, Any] = {"status": status, "code": details.pop("code", None) or STATUS_CODES.get(
        status, "client_error" if status < 500 else "internal"), "message": message}
    if field:
        body["field"] = field
    body.update(details)
    return {"error": body}


class InputError(KbError):
    """Bad input from the caller (a parameter, a body, a file); `field` names what is wrong."""

    http_status = 400
    code = "invalid_parameter"


class NotFoundError(KbError):
    """The named thing (a record, a version) does not exist."""

    http_status = 404
    code = "not_found"


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
    code = "conflict"


class StorageError(KbError):
    """The data directory cannot take the write (disk full, read-only, over quota); nothing was changed."""

    http_status = 507
    code = "storage_unavailable"


class UnavailableError(KbError):
    """The service cannot answer now: no version served yet, or the search engine not answering."""

    http_status = 503
    code = "unavailable"

