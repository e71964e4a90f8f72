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


class OneLineFormatter(logging.Formatter):
    """Escapes control characters in the message (`\\n` stays visible as the two characters `\\n`); a
    traceback that follows is the process's own and keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(_escape, record.message)
        return super().formatMessage(record)


def configure(verbose: bool) -> None:
    """Logs to standard error, escaped, at INFO (DEBUG when `verbose`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("elastic_transport").setLevel(logging.DEBUG if verbose else logging.WARNING)
