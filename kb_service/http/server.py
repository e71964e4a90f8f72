"""Serving the WSGI app with waitress, tolerant of raw UTF-8 in the request line.

`curl 'localhost:8000/search?q=杭州的人口'` sends the Chinese bytes unencoded, which HTTP does not allow and
every strict server (waitress, gunicorn, cheroot, uvicorn) refuses with 400. Browsers percent-encode such
bytes; this parser does the same before waitress parses the line, so hand-typed queries just work. Bytes
below 0x80 are untouched, so nothing a well-formed request says can change meaning.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile

from threadpoolctl import threadpool_limits
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import create_server

from kb_service.config import ServiceConfig
from kb_service.http.prefork import Prefork

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


def run_server(app, host: str, port: int, threads: int, sockets: list[socket.socket] | None = None) -> None:
    listen = {"sockets": sockets} if sockets else {"host": host, "port": port}
    server = create_server(app, threads=threads, ident="kb-service", **listen)
    server.channel_class = Utf8Channel
    server.run()


def worker_count(config: ServiceConfig, requested: int | None) -> int:
    """`--workers`, else server.workers; 0 means one per CPU core."""
    workers = config.server.workers if requested is None else requested
    return workers or os.cpu_count() or 1


def serve(config: ServiceConfig, host: str | None = None, port: int | None = None,
          workers: int | None = None) -> None:
    """Serve with waitress: one process, or `workers` processes forked after the encoder and the served
    version are loaded (prefork.py), sharing that memory; the reload schedule runs once either way."""
    host = host or config.server.host
    port = port or config.server.port
    workers = worker_count(config, workers)
    metrics_dir = None
    if workers > 1:  # every worker's metrics through files; set before prometheus_client is first imported
        assert "prometheus_client" not in sys.modules, "multi-process metrics need the directory set first"
        metrics_dir = tempfile.mkdtemp(prefix="kb-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from kb_service.http.app import create_app
    from kb_service.reload.schedule import build_scheduler
    from kb_service.serving.service import SearchService

    service = SearchService(config)
    # one compute thread per request: concurrency comes from request threads and workers, and BLAS threads
    # spinning beside them on the same cores cut throughput under load (8 connections, 2 cores: 50 req/s
    # with 2 BLAS threads against 78 for a single client)
    threadpool_limits(1)
    service.encoder.use_threads(1)
    scheduler = build_scheduler(config)
    if scheduler is not None:
        scheduler.start()
        log.info("scheduled reloads: %s", config.reload.cron or f"every {config.reload.interval_minutes} min")
    log.info("kb-service listening on http://%s:%d (%d worker process%s)", host, port, workers,
             "es" if workers > 1 else "")
    if workers == 1:
        run_server(create_app(config, service=service), host=host, port=port, threads=config.server.threads)
        return
    from prometheus_client import multiprocess

    def work(listener: socket.socket) -> None:  # in each forked worker: its own app, stores and watcher
        run_server(create_app(config, service=service), host=host, port=port, threads=config.server.threads,
                   sockets=[listener])

    def follow() -> None:  # replacement workers are forked from the parent: keep it on the served version
        try:
            service.refresh()
        except Exception:
            log.exception("the parent process could not open the new version; workers still follow it")

    try:
        Prefork(host, port, workers, work, on_worker_exit=multiprocess.mark_process_dead, tick=follow).run()
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        shutil.rmtree(metrics_dir, ignore_errors=True)
