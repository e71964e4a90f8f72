"""The process's log format: one line per record, whatever a request put into the message; text for a
person, or one JSON object per line (`server.log_format: json`) for a log shipper.

A message carries values a caller chose (a version name, an address, a query); a newline or another control
character in one would let that caller forge a log line, so the text formatter escapes them in every message
and the JSON one encodes them. Every JSON line names the worker's pid, the request being answered (if any),
and the index and config versions the process serves.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
import time

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _escape(match: re.Match) -> str:
    return match.group(0).encode("unicode_escape").decode("ascii")


_MASKED: set[str] = set()


def mask(secret: str) -> None:
    """Hides `secret` in every log line from now on (a cluster password, an API key): a client library's
    debug line or a traceback that quotes it shows *** instead."""
    if len(secret) >= 4:
        _MASKED.add(secret)


def _masked(text: str) -> str:
    for secret in _MASKED:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class OneLineFormatter(logging.Formatter):
    """Escapes control characters in the message (`\\n` stays visible as the two characters `\\n`); a
    traceback that follows is the process's own and keeps its lines. Masked secrets never appear."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(_escape, record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return _masked(super().format(record))


REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("kb_request_id", default=None)
_context: dict[str, str] = {}  # what the process serves: index_version, config_version


def set_context(**fields: str | None) -> None:
    """Fields every JSON line of this process carries from now on (None removes one)."""
    for name, value in fields.items():
        if value is None:
            _context.pop(name, None)
        else:
            _context[name] = value


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, pid, the request id and served
    versions when known, the message, structured `fields` a caller passed (`extra={"fields": {...}}`), and a
    traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "pid": record.process or os.getpid(), **_context}
        request_id = REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _masked(json.dumps(line, ensure_ascii=False, default=str))


class _StandardError(logging.StreamHandler):
    """Writes to the standard error of the moment, not the one at configuration, so a later redirection (a
    test's capture, a supervisor reopening it) takes the log lines along instead of leaving them to a closed
    stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(verbose: bool, log_format: str = "text") -> None:
    """Logs to standard error at INFO (DEBUG when `verbose`): escaped text lines, or JSON lines, in which
    Python's warnings and the tracebacks of failing threads arrive as records too (nothing else writes to
    standard error)."""
    handler = _StandardError()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)
        threading.excepthook = lambda hook: logging.getLogger("kb_service.thread").error(
            "thread %s failed", hook.thread.name if hook.thread else "?",
            exc_info=hook.exc_value)
    else:  # back to Python's own handling, should a reload switch from JSON to text
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.captureWarnings(False)
        threading.excepthook = threading.__excepthook__
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    logging.getLogger("elastic_transport").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # opensearch-py logs every failed request as a warning; the service reports each failure itself
    logging.getLogger("opensearch").setLevel(logging.DEBUG if verbose else logging.ERROR)
    # faiss logs, at INFO, each CPU build it tries before the one that loads: noise before every command
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if verbose else logging.WARNING)
