"""Admin endpoints (config, reloads, versions, rollback), every one behind `admin_required`.

The API key is checked before anything else a request carries is read, so an unauthenticated caller learns
nothing from how its body would have been parsed; every admin action leaves an audit line with the key's id.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, request

from kb_service.config import ConfigError
from kb_service.errors import AuthError, InputError, TooManyRequestsError
from kb_service.feedback.sqlite import open_database
from kb_service.http.auth import matching_key_id
from kb_service.reload.run import history_of, rollback, run_reload
from kb_service.serving.request import parse_bool, parse_int
from kb_service.serving.service import SearchService

blueprint = Blueprint("admin", __name__, url_prefix="/admin")
audit = logging.getLogger("kb_service.audit")


def _service() -> SearchService:
    return current_app.extensions["kb_service"]


class FailedAttempts:
    """Wrong admin keys per client address: after `allowed` failures an address is locked out for
    `lockout_s`, right key or not, which makes guessing keys slow. Kept in SQLite in the data directory so
    that every worker process counts the same failures (a guesser gains nothing from landing on another
    worker). Bounded: the least recently failing addresses are forgotten first."""

    MAX_ADDRESSES = 10_000

    def __init__(self, path: Path):
        self._db = open_database(path, "CREATE TABLE IF NOT EXISTS failures (address TEXT PRIMARY KEY, "
                                 "count INTEGER, until REAL, touched REAL)")
        self._lock = threading.Lock()

    def locked_for(self, address: str) -> int:
        """Seconds the address must still wait (0 when it may try)."""
        with self._lock:
            row = self._db.execute("SELECT until FROM failures WHERE address = ?", (address,)).fetchone()
        return max(0, math.ceil((row[0] if row else 0.0) - time.time()))

    def failed(self, address: str, allowed: int, lockout_s: float) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")  # read and write the count as one step across processes
            row = self._db.execute("SELECT count FROM failures WHERE address = ?", (address,)).fetchone()
            count, until = (row[0] if row else 0) + 1, 0.0
            if count >= allowed:
                count, until = 0, now + lockout_s
            self._db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)", (address, count, until, now))
            self._db.execute("DELETE FROM failures WHERE address IN (SELECT address FROM failures ORDER BY touched "
                             "DESC LIMIT -1 OFFSET ?)", (self.MAX_ADDRESSES,))

    def succeeded(self, address: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM failures WHERE address = ?", (address,))


def admin_required(action: str) -> Callable:
    """Refuses the call (401, or 403 when no key is configured, or 429 while the address is locked out after
    repeated wrong keys) unless it presents a configured API key as `X-API-Key` or a bearer token; the
    matching key's id is `g.admin_key`."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def checked(*args, **kwargs):
            server = _service().config.server
            if not server.admin_key_sha256:
                raise AuthError("the admin API is disabled: configure server.admin_key_sha256 (see `kb admin-key`)",
                                status=403)
            attempts: FailedAttempts = current_app.extensions["kb_admin_failures"]
            address = request.remote_addr or "unknown"
            wait = attempts.locked_for(address)
            if wait:
                audit.warning("refused admin action %s from %s: locked out for %d s", action, address, wait)
                raise TooManyRequestsError(f"too many wrong API keys from this address: retry in {wait} s", wait,
                                           "X-API-Key")
            presented = request.headers.get("X-API-Key") or request.headers.get("Authorization", "").removeprefix(
                "Bearer ")
            key_id = matching_key_id(presented, server.admin_key_sha256)
            if key_id is None:
                attempts.failed(address, server.admin_failures_allowed, server.admin_lockout_s)
                audit.warning("refused admin action %s from %s: bad or missing API key", action, address)
                raise AuthError("missing or wrong API key (send it as X-API-Key)")
            attempts.succeeded(address)
            audit.info("admin action %s by key %s from %s", action, key_id, request.remote_addr)
            g.admin_key = key_id
            return view(*args, **kwargs)

        return checked

    return decorate


def _body() -> dict:
    """The JSON object body (empty when there is none)."""
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise InputError("expected a JSON object", "body")
    return body


def _flag(body: dict, name: str) -> bool:
    return parse_bool(body.get(name, request.args.get(name)), name)


@blueprint.get("/config")
@admin_required("config.show")
def show_config():
    current = _service().config
    watcher = current_app.extensions["kb_config_watcher"]
    return jsonify({"version": current.version, "source": current.source, "last_error": watcher.last_error})


@blueprint.post("/config/reload")
@admin_required("config.reload")
def reload_config():
    try:
        changed = current_app.extensions["kb_config_watcher"].reload()
    except ConfigError as err:
        raise InputError("the config file is invalid; the previous config is still live", "config",
                         problems=err.problems) from None
    return jsonify({"version": _service().config.version, "changed": changed, "by": g.admin_key})


@blueprint.post("/reload")
@admin_required("reload")
def start_reload():
    """Starts a gated reload (202), or with `wait: true` runs it and answers with the run."""
    body = _body()
    force, wait = _flag(body, "force"), _flag(body, "wait")
    if force:
        audit.info("reload by key %s overrides its gates (force)", g.admin_key)
    config, trigger = _service().config, f"api:{g.admin_key}"
    if not wait:
        app = current_app._get_current_object()

        def background():
            try:
                run_reload(config, trigger=trigger, force=force)
            except Exception:
                app.logger.exception("reload started through the API did not switch")

        threading.Thread(target=background, name="kb-reload", daemon=True).start()
        return jsonify({"status": "started", "history": "/admin/reloads"}), 202
    return jsonify(run_reload(config, trigger=trigger, force=force).to_dict())


@blueprint.get("/reloads")
@admin_required("reloads.show")
def reloads():
    limit = parse_int(request.args.get("limit", 20), "limit", 1, 10_000)
    history = history_of(_service().config)
    try:
        return jsonify({"runs": [run.to_dict() for run in history.runs(limit)]})
    finally:
        history.close()


@blueprint.get("/versions")
@admin_required("versions.show")
def versions():
    return jsonify({"versions": [{"name": v.name, "current": v.current, **v.manifest}
                                 for v in _service().engine.versions()]})


@blueprint.post("/rollback")
@admin_required("rollback")
def roll_back():
    version = _body().get("version")
    if version is not None and not isinstance(version, str):
        raise InputError("expected a version name", "version")
    audit.info("rollback by key %s to %s", g.admin_key, version or "(previous)")
    service = _service()
    done = rollback(service.config, version)
    service.refresh()
    return jsonify({"serving": done.serving, "previous": done.previous, "by": g.admin_key})
