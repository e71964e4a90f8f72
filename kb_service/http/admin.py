"""Admin endpoints (config, reloads, versions, rollback), every one behind the admin role's key.

The API key is checked before anything else a request carries is read, so an unauthenticated caller learns
nothing from how its body would have been parsed; every admin action leaves an audit line with the key's id.
"""

from __future__ import annotations

import logging
import threading

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import BaseModel, Field

from kb_service.config import ConfigError, Role
from kb_service.errors import InputError
from kb_service.http.auth import role_required
from kb_service.http.bodies import json_object
from kb_service.reload.run import Reloader, history_of, rollback
from kb_service.serving.service import SearchService
from kb_service.validation import Flag, parse_int, validated

blueprint = Blueprint("admin", __name__, url_prefix="/admin")
audit = logging.getLogger("kb_service.audit")
VERSION_NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # what `kb versions` lists; nothing else is echoed


class ReloadBody(BaseModel):
    """POST /v1/admin/reload (each flag may also come in the query string)."""

    force: Flag = Field(False, description="switch even when a gate refuses")
    wait: Flag = Field(False, description="run now and answer with the run")


class RollbackBody(BaseModel):
    version: str | None = Field(None, pattern=VERSION_NAME,
                                description="a name GET /v1/admin/versions lists (default the previous one)")


def _service() -> SearchService:
    return current_app.extensions["kb_service"]


@blueprint.get("/config")
@role_required(Role.ADMIN, "config.show")
def show_config():
    current = _service().config
    watcher = current_app.extensions["kb_config_watcher"]
    return jsonify({"version": current.version, "source": current.source, "last_error": watcher.last_error})


@blueprint.post("/config/reload")
@role_required(Role.ADMIN, "config.reload")
def reload_config():
    try:
        changed = current_app.extensions["kb_config_watcher"].reload()
    except ConfigError as err:
        raise InputError("the config file is invalid; the previous config is still live", "config",
                         problems=err.problems) from None
    return jsonify({"version": _service().config.version, "changed": changed, "by": g.key_id})


@blueprint.post("/reload")
@role_required(Role.ADMIN, "reload")
def start_reload():
    """Starts a gated reload (202), or with `wait: true` runs it and answers with the run."""
    body = validated(ReloadBody, {**request.args.to_dict(), **json_object()})
    force, wait = body.force, body.wait
    if force:
        audit.info("reload by key %s overrides its gates (force)", g.key_id)
    runtime, trigger = _service().runtime, f"api:{g.key_id}"
    reload: Reloader = current_app.extensions["kb_reload"]
    if not wait:
        app = current_app._get_current_object()  # type: ignore[attr-defined]  # werkzeug's proxy, untyped

        def background():
            try:
                reload(runtime, trigger, force)
            except Exception:
                app.logger.exception("reload started through the API did not switch")

        threading.Thread(target=background, name="kb-reload", daemon=True).start()
        return jsonify({"status": "started", "history": "/admin/reloads"}), 202
    run = reload(runtime, trigger, force)
    _service().refresh()  # this worker answers from the new version at once; the others within a second
    return jsonify(run.to_dict())


@blueprint.get("/reloads")
@role_required(Role.ADMIN, "reloads.show")
def reloads():
    limit = parse_int(request.args.get("limit", 20), "limit", 1, 10_000)
    return jsonify({"runs": [run.to_dict() for run in history_of(_service().runtime).runs(limit)]})


@blueprint.get("/versions")
@role_required(Role.ADMIN, "versions.show")
def versions():
    return jsonify({"versions": [{"name": v.name, "current": v.current, **v.manifest}
                                 for v in _service().engine.versions()]})


@blueprint.post("/rollback")
@role_required(Role.ADMIN, "rollback")
def roll_back():
    version = validated(RollbackBody, json_object()).version
    audit.info("rollback by key %s to %s", g.key_id, version or "(previous)")
    service = _service()
    done = rollback(service.runtime, version)
    service.refresh()
    return jsonify({"serving": done.serving, "previous": done.previous, "by": g.key_id})
