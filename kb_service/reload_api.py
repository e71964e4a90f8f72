"""Admin endpoints for reloads, their history, versions and rollback (all behind the admin API key)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask, jsonify, request

from kb_service.reloading import (
    ReloadBusyError,
    ReloadRefusedError,
    RollbackError,
    history_of,
    rollback,
    run_reload,
)
from kb_service.service import RequestError, SearchService


def _body() -> dict:
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise RequestError("body", "expected a JSON object")
    return body


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, request.args.get(name, False))
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes"):
        return True
    if str(value).lower() in ("", "0", "false", "no"):
        return False
    raise RequestError(name, f"expected true or false, got {value!r}")


def register_reload_routes(app: Flask, service: SearchService, admin: Callable[[str], str]) -> None:
    def error(status: int, message: str, **extra):
        return jsonify({"error": {"status": status, "message": message, **extra}}), status

    @app.post("/admin/reload")
    def admin_reload():
        """Starts a gated reload (202), or with `wait: true` runs it and answers with the run."""
        body = _body()
        force, wait = _flag(body, "force"), _flag(body, "wait")
        key_id = admin("reload" + (" --force" if force else ""))
        config = service.config
        if not wait:
            def background():
                try:
                    run_reload(config, trigger=f"api:{key_id}", force=force)
                except Exception:
                    app.logger.exception("reload started through the API did not switch")

            threading.Thread(target=background, name="kb-reload", daemon=True).start()
            return jsonify({"status": "started", "history": "/admin/reloads"}), 202
        try:
            run = run_reload(config, trigger=f"api:{key_id}", force=force)
        except ReloadBusyError as err:
            return error(409, str(err))
        except ReloadRefusedError as err:
            return error(409, str(err), run=err.run.to_dict())
        return jsonify(run.to_dict())

    @app.get("/admin/reloads")
    def admin_reloads():
        admin("reloads.show")
        history = history_of(service.config)
        try:
            limit = int(request.args.get("limit", 20))
        except ValueError:
            raise RequestError("limit", "expected an integer") from None
        try:
            return jsonify({"runs": [run.to_dict() for run in history.runs(limit)]})
        finally:
            history.close()

    @app.get("/admin/versions")
    def admin_versions():
        admin("versions.show")
        return jsonify({"versions": [{"name": v.name, "current": v.current, **v.manifest}
                                     for v in service.store.versions()]})

    @app.post("/admin/rollback")
    def admin_rollback():
        version = _body().get("version")
        if version is not None and not isinstance(version, str):
            raise RequestError("version", "expected a version name")
        key_id = admin(f"rollback {version or '(previous)'}")
        try:
            served, before = rollback(service.config, version)
        except RollbackError as err:
            return error(409, str(err))
        except ReloadBusyError as err:
            return error(409, str(err))
        service.refresh()
        return jsonify({"serving": served, "previous": before, "by": key_id})
