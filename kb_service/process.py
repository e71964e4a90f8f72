"""`kb serve`'s process: metrics shared through files, one BLAS thread per request, the reload schedule in the
parent and waitress workers forked (http/prefork.py) after the encoder and the served version are loaded.

The HTTP layer (`http/`) knows how to answer one request; this module decides how many processes answer
them and what they share, from the parts the runtime built.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from threadpoolctl import threadpool_limits

from kb_service import logs
from kb_service.runtime import Runtime

log = logging.getLogger(__name__)


def fresh_metrics_dir() -> str:
    """A new directory for the workers' metric files, named by this server's pid; those of servers that were
    killed before they could remove theirs (no process has that pid any more) are removed first."""
    for stale in Path(tempfile.gettempdir()).glob("kb-metrics-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and stale.owner() == getpass.getuser() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"kb-metrics-{os.getpid()}-")


def serve(runtime: Runtime, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Serve with waitress in `workers` processes (default `server.workers`; 0 is one per CPU core) forked
    after the encoder and the served version are loaded, sharing that memory; the reload schedule runs once,
    in the parent. SIGTERM drains, SIGHUP re-reads the config and replaces the workers one at a time."""
    config = runtime.config
    if workers is not None:
        config = replace(config, server=replace(config.server, workers=workers))
        runtime = runtime.with_config(config)
    host, port = host or config.server.host, port or config.server.port
    # every worker's metrics through files; the client reads the directory when it is first imported
    assert "prometheus_client" not in sys.modules, "multi-process metrics need the directory set first"
    metrics_dir = fresh_metrics_dir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from prometheus_client import multiprocess

    from kb_service import metrics
    from kb_service.http.app import create_app
    from kb_service.http.prefork import Prefork
    from kb_service.http.server import run_server
    from kb_service.reload.apart import reload_apart
    from kb_service.reload.schedule import build_scheduler
    from kb_service.serving.service import SearchService, frozen_changes

    metrics.share_through(metrics_dir)

    def open_service(parts: Runtime) -> SearchService:
        service = SearchService(parts)
        # one compute thread per request: concurrency comes from request threads and workers, and BLAS
        # threads spinning beside them on the same cores cut throughput under load
        threadpool_limits(1)
        service.encoder.use_threads(1)
        return service

    serving = {"service": open_service(runtime)}

    def work(listener: socket.socket, heartbeat: Callable[[], None]) -> None:  # in each forked worker
        service = serving["service"]
        app = create_app(service.runtime, service=service, reload=reload_apart)
        run_server(app, service.runtime.config.server, listener, heartbeat)

    def before_forks() -> None:  # a new worker starts on the served version, opened once in the parent
        try:
            serving["service"].refresh()
        except Exception:
            log.exception("the parent process could not open the served version; new workers will open it")

    def after_forks() -> None:  # the workers follow CURRENT on their own; the parent holds no version
        serving["service"].let_go()

    def reconfigure() -> None:  # SIGHUP: the new workers start from the config file as it is now
        service = serving["service"]
        current = service.runtime.config
        settings = service.runtime.read_config()
        if (settings.server.host, settings.server.port) != (current.server.host, current.server.port):
            log.warning("SIGHUP: server.host and server.port apply at the next start, not in a rolling restart")
        if frozen_changes(settings, current):  # a new encoder or engine: opened before any worker moves
            serving["service"] = open_service(service.runtime.with_config(settings))
            service.runtime.close()
        else:
            service.reload_config(settings)
        if settings.server.log_format is not current.server.log_format:  # new workers inherit the handler
            logs.configure(log.isEnabledFor(logging.DEBUG), settings.server.log_format.value)
        log.info("SIGHUP: config %s from %s; replacing the workers one at a time", settings.version, settings.source)

    scheduler = build_scheduler(runtime, reload=reload_apart)
    if scheduler is not None:
        scheduler.start()
        log.info("scheduled reloads: %s", config.reload.cron or f"every {config.reload.interval_minutes} min")
    log.info("kb-service listening on http://%s:%d (%d worker process%s)", host, port, config.server.workers,
             "es" if config.server.workers > 1 else "")
    try:
        Prefork(host, port, config.server.workers, work, on_worker_exit=multiprocess.mark_process_dead,
                before_forks=before_forks, after_forks=after_forks, reconfigure=reconfigure,
                drain_s=config.server.drain_s, worker_timeout_s=config.server.worker_timeout_s).run()
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        runtime.close()
