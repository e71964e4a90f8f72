"""What probes and scrapers read: liveness, readiness and Prometheus metrics, outside the versioned API (a
load balancer's health check and a scraper's target stay where they are across API versions)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from kb_service import logs, metrics
from kb_service.errors import error_body
from kb_service.serving.service import NotReadyError, SearchService

blueprint = Blueprint("ops", __name__)


def _service() -> SearchService:
    return current_app.extensions["kb_service"]


@blueprint.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    service = _service()
    reason = service.unready_reason()
    if reason:
        return jsonify(error_body(503, reason, code="not_ready")), 503
    state = service.state
    body = {"status": "ready", "index_version": state.version.name, "records": state.version.size,
            "config_version": state.config.version, "encoder": state.version.manifest.get("encoder")}
    if service.fallback:  # ready, but not on the version CURRENT names: say which and why
        body["fallback"] = {"wanted": service.fallback.wanted, "reason": service.fallback.reason}
    return jsonify(body)


def publish_state(service: SearchService) -> None:
    """This process's served version and cache counts into the metrics (every worker, every second)."""
    try:
        state = service.state
    except NotReadyError:
        state = None
    hits, misses = service.query_vector_cache()
    logs.set_context(index_version=state.version.name if state else None, config_version=service.config.version)
    metrics.publish_state(service, state.version.name if state else None, service.config.version, hits, misses,
                          service.fallback is not None)


@blueprint.get("/metrics")
def prometheus_metrics():
    """Prometheus' text format: requests, latencies, search stages, the served version, caches, reloads."""
    publish_state(_service())
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
