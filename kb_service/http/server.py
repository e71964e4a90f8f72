"""Serving the WSGI app with waitress, tolerant of raw UTF-8 in the request line.

`curl 'localhost:8000/search?q=杭州的人口'` sends the Chinese bytes unencoded, which HTTP does not allow and
every strict server (waitress, gunicorn, cheroot, uvicorn) refuses with 400. Browsers percent-encode such
bytes; this parser does the same before waitress parses the line, so hand-typed queries just work. Bytes
below 0x80 are untouched, so nothing a well-formed request says can change meaning.
"""

from __future__ import annotations

import logging

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import create_server

from kb_service.config import ServiceConfig

log = logging.getLogger(__name__)


def percent_encode_high_bytes(line: bytes) -> bytes:
    return b"".join(b"%%%02X" % byte if byte >= 0x80 else bytes((byte,)) for byte in line)


class Utf8RequestLineParser(HTTPRequestParser):
    def parse_header(self, header_plus: bytes):
        end = header_plus.find(b"\r\n")
        if end > 0 and any(byte >= 0x80 for byte in header_plus[:end]):
            header_plus = percent_encode_high_bytes(header_plus[:end]) + header_plus[end:]
        return super().parse_header(header_plus)


class Utf8Channel(HTTPChannel):
    parser_class = Utf8RequestLineParser


def run_server(app, host: str, port: int, threads: int) -> None:
    server = create_server(app, host=host, port=port, threads=threads, ident="kb-service")
    server.channel_class = Utf8Channel
    server.run()


def serve(config: ServiceConfig, host: str | None = None, port: int | None = None) -> None:
    """Serve with waitress: a production WSGI server that shares one in-memory index across threads; the
    configured reload schedule runs in this process."""
    from kb_service.http.app import create_app
    from kb_service.reload.schedule import build_scheduler

    app = create_app(config)
    scheduler = build_scheduler(config)
    if scheduler is not None:
        scheduler.start()
        log.info("scheduled reloads: %s", config.reload.cron or f"every {config.reload.interval_minutes} min")
    host = host or config.server.host
    port = port or config.server.port
    log.info("kb-service listening on http://%s:%d", host, port)
    run_server(app, host=host, port=port, threads=config.server.threads)
