"""The process's log format: one line per record, whatever a request put into the message.

A message carries values a caller chose (a version name, an address, a query); a newline or another control
character in one would let that caller forge a log line, so the formatter escapes them in every message.
"""

from __future__ import annotations

import logging
import re
import sys

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


def configure(verbose: bool) -> None:
    """Logs to standard error, escaped, at INFO (DEBUG when `verbose`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("elastic_transport").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # opensearch-py logs every failed request as a warning; the service reports each failure itself
    logging.getLogger("opensearch").setLevel(logging.DEBUG if verbose else logging.ERROR)
