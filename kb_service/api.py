"""The HTTP API: `create_app(config)` builds the Flask app; every error is JSON naming the field at fault."""

from __future__ import annotations

import logging
import threading

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from kb_service.config import ServiceConfig
from kb_service.service import NotReadyError, RequestError, SearchService, parse_request
from query_understanding.understander import QueryError

log = logging.getLogger(__name__)
VERSION_POLL_SECONDS = 1.0


def _error(status: int, message: str, field: str | None = None):
    body = {"error": {"status": status, "message": message}}
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


def _watch_versions(service: SearchService, stop: threading.Event) -> None:
    while not stop.wait(VERSION_POLL_SECONDS):
        try:
            service.refresh()
        except Exception:
            log.exception("could not open the new index version; still serving the previous one")


def create_app(config: ServiceConfig, service: SearchService | None = None, watch: bool = True) -> Flask:
    service = service or SearchService(config)
    app = Flask("kb_service")
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["kb_service"] = service
    if watch:
        stop = threading.Event()
        threading.Thread(target=_watch_versions, args=(service, stop), daemon=True, name="kb-version-watch").start()
        app.extensions["kb_service_stop"] = stop

    @app.errorhandler(RequestError)
    def _bad_request(err: RequestError):
        return _error(400, err.message, err.field)

    @app.errorhandler(QueryError)
    def _bad_query(err: QueryError):
        return _error(400, str(err), "q")

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
        if not service.ready:
            return _error(503, "no index version is loaded")
        state = service.state
        return jsonify({"status": "ready", "index_version": state.index.name, "records": state.index.size,
                        "config_version": config.version, "encoder": state.index.manifest.get("encoder")})

    @app.route("/search", methods=["GET", "POST"])
    def search():
        search_request = parse_request(_params(), config)
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

    app = create_app(config)
    host = host or config.server.host
    port = port or config.server.port
    log.info("kb-service listening on http://%s:%d", host, port)
    run_server(app, host=host, port=port, threads=config.server.threads)
