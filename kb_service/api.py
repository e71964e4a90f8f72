"""The HTTP API: `create_app(config)` builds the Flask app; every error is JSON naming the field at fault."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from kb_service.admin_auth import matching_key_id
from kb_service.backends import BackendUnavailableError
from kb_service.config import ConfigError, ServiceConfig, load_config
from kb_service.reload_api import register_reload_routes
from kb_service.service import ConfigReloadError, NotReadyError, RequestError, SearchService, parse_request
from query_understanding.understander import QueryError

log = logging.getLogger(__name__)
audit = logging.getLogger("kb_service.audit")
POLL_SECONDS = 1.0


class AdminError(Exception):
    """An admin call refused for want of a valid API key (401) or of any configured key (403)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str, field: str | None = None, **extra):
    body = {"error": {"status": status, "message": message, **extra}}
    if field:
        body["error"]["field"] = field
    return jsonify(body), status


def _params() -> dict:
    """Query-string parameters, overridden by a JSON body on POST."""
    params = request.args.to_dict()
    if request.method == "POST":
        body = request.get_json(silent=True)
        if body is None and request.get_data():
            raise RequestError("body", "expected a JSON object")
        if body is not None and not isinstance(body, dict):
            raise RequestError("body", "expected a JSON object")
        params.update(body or {})
    return params


class ConfigWatcher:
    """Reloads config.yaml when its file changes; a bad file is logged and the previous config stays live."""

    def __init__(self, service: SearchService):
        self.service = service
        self.last_error: list[str] = []
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return Path(self.service.config.source).stat().st_mtime
        except OSError:
            return None

    def reload(self) -> bool:
        """Re-read the config file now; raises ConfigError or ConfigReloadError and keeps the old config."""
        self._mtime = self._stat()
        try:
            changed = self.service.reload_config(load_config(self.service.config.source))
        except ConfigError as err:
            self.last_error = err.problems
            raise
        except ConfigReloadError as err:
            self.last_error = [str(err)]
            raise
        self.last_error = []
        return changed

    def poll(self) -> None:
        if self._stat() != self._mtime:
            try:
                self.reload()
            except (ConfigError, ConfigReloadError) as err:
                log.error("config file changed but was not applied: %s", err)


def _watch(service: SearchService, watcher: ConfigWatcher | None, stop: threading.Event) -> None:
    while not stop.wait(POLL_SECONDS):
        try:
            service.refresh()
        except Exception:
            log.exception("could not open the new index version; still serving the previous one")
        if watcher:
            watcher.poll()


def create_app(config: ServiceConfig, service: SearchService | None = None, watch: bool = True) -> Flask:
    service = service or SearchService(config)
    watcher = ConfigWatcher(service)
    app = Flask("kb_service")
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["kb_service"] = service
    if watch:
        stop = threading.Event()
        threading.Thread(target=_watch, args=(service, watcher if config.server.watch_config else None, stop),
                         daemon=True, name="kb-watch").start()
        app.extensions["kb_service_stop"] = stop

    def admin(action: str) -> str:
        """The calling key's id; refuses (401/403) without a configured, matching key. Logs who did what."""
        digests = service.config.server.admin_key_sha256
        if not digests:
            raise AdminError(403, "the admin API is disabled: configure server.admin_key_sha256 (see `kb admin-key`)")
        presented = request.headers.get("X-API-Key") or request.headers.get("Authorization", "").removeprefix(
            "Bearer ")
        key_id = matching_key_id(presented, digests)
        if key_id is None:
            audit.warning("refused admin action %s from %s: bad or missing API key", action, request.remote_addr)
            raise AdminError(401, "missing or wrong API key (send it as X-API-Key)")
        audit.info("admin action %s by key %s from %s", action, key_id, request.remote_addr)
        return key_id

    register_reload_routes(app, service, admin)

    @app.errorhandler(AdminError)
    def _admin_refused(err: AdminError):
        return _error(err.status, err.message, "X-API-Key")

    @app.errorhandler(ConfigError)
    def _bad_config(err: ConfigError):
        return _error(400, "the config file is invalid; the previous config is still live", "config",
                      problems=err.problems)

    @app.errorhandler(ConfigReloadError)
    def _frozen_config(err: ConfigReloadError):
        return _error(409, str(err))

    @app.get("/admin/config")
    def admin_config():
        admin("config.show")
        current = service.config
        return jsonify({"version": current.version, "source": current.source, "last_error": watcher.last_error})

    @app.post("/admin/config/reload")
    def admin_config_reload():
        key_id = admin("config.reload")
        changed = watcher.reload()
        return jsonify({"version": service.config.version, "changed": changed, "by": key_id})

    @app.errorhandler(RequestError)
    def _bad_request(err: RequestError):
        return _error(400, err.message, err.field)

    @app.errorhandler(QueryError)
    def _bad_query(err: QueryError):
        return _error(400, str(err), "q")

    @app.errorhandler(BackendUnavailableError)
    def _backend_down(err: BackendUnavailableError):
        return _error(503, str(err))

    @app.errorhandler(NotReadyError)
    def _not_ready(err: NotReadyError):
        return _error(503, str(err))

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        return _error(err.code or 500, err.description or err.name)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return _error(500, "internal error")

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        reason = service.unready_reason()
        if reason:
            return _error(503, reason)
        state = service.state
        return jsonify({"status": "ready", "index_version": state.index.name, "records": state.index.size,
                        "config_version": state.config.version, "encoder": state.index.manifest.get("encoder")})

    @app.route("/search", methods=["GET", "POST"])
    def search():
        search_request = parse_request(_params(), service.config)
        response = service.search(search_request)
        return jsonify(response.to_dict(search_request.offset, search_request.explain))

    @app.get("/understand")
    def understand():
        query = request.args.get("q")
        if not query:
            raise RequestError("q", "required: the query text")
        return jsonify(service.understand(query).to_dict())

    @app.get("/knowledge/<path:kid>")
    def knowledge(kid: str):
        record = service.get(kid)
        if record is None:
            return _error(404, f"no record with kid {kid!r}", "kid")
        return jsonify(record.to_dict())

    return app


def serve(config: ServiceConfig, host: str | None = None, port: int | None = None) -> None:
    """Serve with waitress: a production WSGI server that shares one in-memory index across threads."""
    from kb_service.http_server import run_server
    from kb_service.scheduling import build_scheduler

    app = create_app(config)
    scheduler = build_scheduler(config)
    if scheduler is not None:
        scheduler.start()
        log.info("scheduled reloads: %s", config.reload.cron or f"every {config.reload.interval_minutes} min")
    host = host or config.server.host
    port = port or config.server.port
    log.info("kb-service listening on http://%s:%d", host, port)
    run_server(app, host=host, port=port, threads=config.server.threads)
