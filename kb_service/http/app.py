"""`create_app(config)`: the Flask app wired from its blueprints, its error handlers and the version watcher.

Every error answers the same JSON shape (`kb_service.errors.error_body`): a `KbError` with its own status and
field, an HTTP-level refusal (404, 405, 413) with its code, anything else a logged 500.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, current_app, g, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from kb_service import logs, metrics
from kb_service.config import ConfigError
from kb_service.errors import AuthError, KbError, TooManyRequestsError, error_body
from kb_service.feedback.events import EventStore
from kb_service.feedback.judgments import JudgmentStore
from kb_service.feedback.query_log import QueryLog
from kb_service.http import admin, console, ingest, openapi, ops, search
from kb_service.http.auth import AccessStore, client_address
from kb_service.reload.run import Reloader, run_reload
from kb_service.runtime import Runtime
from kb_service.serving.service import ConfigReloadError, NotReadyError, SearchService
from query_understanding.normalise import normalise_text

log = logging.getLogger(__name__)
access = logging.getLogger("kb_service.access")
POLL_SECONDS = 1.0
CLICKED_KIDS = 2000  # the most clicked records whose entities type-ahead counts as asked for
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a caller's id is kept when it is this tame, else replaced


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
            changed = self.service.reload_config(self.service.runtime.read_config(self.service.config.source))
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


def _watch(service: SearchService, watcher: ConfigWatcher | None, asked: Callable[[], dict[str, int]],
           stop: threading.Event) -> None:
    """Every second: follow CURRENT and the config file, and publish what this process serves (with several
    workers each reports its own, whichever answers the scrape)."""
    while not stop.wait(POLL_SECONDS):
        try:
            service.refresh()
        except Exception:
            log.exception("could not open the new index version; still serving the previous one")
        with contextlib.suppress(NotReadyError):  # nothing served yet: nothing to suggest
            service.suggestion_index(asked)  # built here, not by the first type-ahead request
        if watcher:
            watcher.poll()
        ops.publish_state(service)


def _asked(service: SearchService, query_log: QueryLog, events: EventStore | None) -> dict[str, int]:
    """How often users asked for each entity (by normalised name): searches whose whole query was its name,
    and clicks on its records (the CLICKED_KIDS most clicked); none while the state database does not answer
    (type-ahead then ranks by the KB alone)."""
    try:
        asked = Counter(query_log.searches())
        for kid, clicks in (events.clicks_by_kid(CLICKED_KIDS) if events else {}).items():
            record = service.get(kid)
            if record is not None:
                asked[normalise_text(record.knowledge)] += clicks
        return dict(asked)
    except (OperationalError, InterfaceError):
        return {}


def _error_response(err: Exception):
    if isinstance(err, TooManyRequestsError):
        return jsonify(err.to_json()), err.http_status, {"Retry-After": str(err.retry_after_s)}
    if isinstance(err, AuthError) and err.challenge:
        return jsonify(err.to_json()), err.http_status, {"WWW-Authenticate": 'Basic realm="kb-service console", '
                                                                             'charset="UTF-8"'}
    if isinstance(err, KbError):
        return jsonify(err.to_json()), err.http_status
    if isinstance(err, OperationalError | InterfaceError):  # the state database is down or unreachable
        log.warning("state database unavailable: %s", type(err.orig).__name__ if err.orig else type(err).__name__)
        return jsonify(error_body(503, "the state database is unavailable; retry later", None,
                                  code="state_unavailable")), 503, {"Retry-After": "5"}
    if isinstance(err, RequestEntityTooLarge):
        return jsonify(error_body(413, "the request body is larger than server.max_body_bytes", "body")), 413
    if isinstance(err, HTTPException):  # keeps werkzeug's headers: a 405 says what is Allowed (RFC 9110)
        status = err.code or 500
        headers = {k: v for k, v in err.get_headers() if k.lower() != "content-type"}
        return jsonify(error_body(status, err.description or err.name)), status, headers
    log.exception("unhandled error", exc_info=err)
    return jsonify(error_body(500, "internal error")), 500


def _start_request() -> None:
    g.started = time.perf_counter()
    presented = request.headers.get("X-Request-Id", "")
    g.request_id = presented if _REQUEST_ID.fullmatch(presented) else uuid.uuid4().hex
    logs.REQUEST_ID.set(g.request_id)  # request threads are reused: set afresh for every request


def _forget_request_id(_error: BaseException | None) -> None:
    """Request threads are reused: no later log line may carry this request's id."""
    logs.REQUEST_ID.set(None)


def csp_nonce() -> str:
    """The nonce that lets this response's own inline script run under its Content-Security-Policy."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def _security_headers(response: Response) -> None:
    """No framing, no content sniffing, no referrer; a page may run only the script it carries (by nonce),
    talk only to this origin and post forms only here."""
    nonce = g.get("csp_nonce")
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.path.startswith(("/admin", "/console", f"{openapi.API_PREFIX}/admin")):
        response.headers["Cache-Control"] = "no-store"


def _deprecation_headers(response: Response) -> None:
    """An API path without the version prefix answers as before, saying it is deprecated and where its
    successor is (RFC 9745's Deprecation, RFC 8288's Link)."""
    rule = request.url_rule
    if rule is not None and request.blueprint in ("search", "admin"):
        response.headers["Deprecation"] = "true"
        response.headers["Link"] = f'<{openapi.API_PREFIX}{request.path}>; rel="successor-version"'


def _finish_request(response: Response) -> Response:
    """Every answer carries its request id and the security headers, and leaves one JSON access-log line
    and its metrics."""
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-Id"] = request_id
    _security_headers(response)
    _deprecation_headers(response)
    remote = client_address(current_app.extensions["kb_service"].config.security.trusted_proxies)
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    mode = g.get("search_mode", "")
    metrics.REQUESTS.labels(endpoint, request.method, str(response.status_code), mode).inc()
    metrics.REQUEST_SECONDS.labels(endpoint, mode).observe(seconds)
    fields = {"request_id": request_id, "pid": os.getpid(), "method": request.method, "path": request.path,
              "endpoint": endpoint, "status": response.status_code, "ms": round(seconds * 1000, 2),
              "mode": mode or None, "remote": remote}
    access.info(json.dumps(fields, ensure_ascii=False), extra={"fields": fields})
    return response


def create_app(runtime: Runtime, service: SearchService | None = None, watch: bool = True,
               reload: Reloader = run_reload) -> Flask:
    """The API over `service` (one is opened on `runtime` when not given); `watch` follows new versions and
    config changes every second, as a server does; POST /admin/reload runs `reload` (`kb serve` passes one
    that builds in a child process)."""
    config = runtime.config
    service = service or SearchService(runtime)
    watcher = ConfigWatcher(service)
    app = Flask("kb_service")
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Flask's DefaultJSONProvider has both
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.extensions["kb_service"] = service
    live = service.config
    if live.feedback.enabled:
        app.extensions["kb_events"] = EventStore(runtime.state("events"), live.feedback.max_events,
                                                 live.feedback.max_bytes)
    app.extensions["kb_judgments"] = JudgmentStore(runtime.state("judgments"))
    query_log = QueryLog(runtime.state("query_log"), queue_size=live.state.query_log_queue)
    app.extensions["kb_query_log"] = query_log
    app.extensions["kb_asked"] = functools.partial(_asked, service, query_log, app.extensions.get("kb_events"))
    app.extensions["kb_access"] = AccessStore(runtime.state("access"))
    app.extensions["kb_config_watcher"] = watcher
    app.extensions["kb_reload"] = reload
    if watch:
        ops.publish_state(service)  # metrics and log lines name the served version from the first request
        stop = threading.Event()
        threading.Thread(target=_watch, args=(service, watcher if config.server.watch_config else None,
                                              app.extensions["kb_asked"], stop),
                         daemon=True, name="kb-watch").start()
        app.extensions["kb_service_stop"] = stop
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(search.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(search.blueprint, url_prefix=openapi.API_PREFIX, name="v1_search")
    app.register_blueprint(admin.blueprint, url_prefix=f"{openapi.API_PREFIX}/admin", name="v1_admin")
    app.register_blueprint(ingest.blueprint, url_prefix=openapi.API_PREFIX)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(console.blueprint)
    app.register_error_handler(Exception, _error_response)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_forget_request_id)
    return app
