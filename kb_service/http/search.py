"""The search API: search, type-ahead, query understanding, records by kid, the front end's events."""

from __future__ import annotations

import dataclasses
import uuid

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import BaseModel, Field

from kb_service import metrics
from kb_service.config import Role
from kb_service.errors import InputError, NotFoundError
from kb_service.feedback.events import parse_events
from kb_service.http.auth import rate_limited, role_required
from kb_service.http.bodies import json_body, json_object
from kb_service.http.shaping import search_body
from kb_service.serving.request import parse_search
from kb_service.serving.service import SearchService
from kb_service.validation import Integer, validated
from query_understanding.suggest import MAX_QUERY_CHARS

blueprint = Blueprint("search", __name__)


def _service() -> SearchService:
    return current_app.extensions["kb_service"]


def request_params() -> dict:
    """Query-string parameters, overridden by a JSON object body on POST."""
    params = request.args.to_dict()
    if request.method == "POST":
        params.update(json_object())
    return params


@blueprint.route("/search", methods=["GET", "POST"])
@role_required(Role.SEARCH, "search")
def search():
    service = _service()
    search_request, shape = parse_search(request_params(), service.config)
    response = service.search(search_request)
    current_app.extensions["kb_query_log"].record(response)
    g.search_mode = response.mode.value
    for stage, milliseconds in response.stages_ms.items():
        metrics.STAGE_SECONDS.labels(stage, g.search_mode).observe(milliseconds / 1000)
    return jsonify({"query_id": uuid.uuid4().hex, **search_body(response, search_request.offset,
                                                                search_request.explain, shape)})


@blueprint.post("/events")
@role_required(Role.SEARCH, "events")
def events():
    """Impressions and clicks from the front end, under the query_id a search answered with; a batch is
    stored whole or, when any event in it is invalid, not at all (the 400 names the first bad one)."""
    store = current_app.extensions.get("kb_events")
    if store is None:
        raise NotFoundError("feedback is switched off (feedback.enabled)", "events")
    rate_limited("events", _service().config.security.events_per_minute)
    return jsonify({"accepted": store.add(parse_events(json_body(required=True)))}), 202


class SuggestParameters(BaseModel):
    """`/suggest`'s parameters (unknown ones are ignored)."""

    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="what the user has typed so far")
    size: Integer = Field(5, ge=1, le=20, description="suggestions to return")


@blueprint.get("/suggest")
@role_required(Role.SEARCH, "suggest")
def suggest():
    """Entity names for a partly typed query: by prefix, pinyin, initials or another name, one typo allowed."""
    params = validated(SuggestParameters, request.args.to_dict())
    found = _service().suggest(params.q, params.size, asked=current_app.extensions["kb_asked"])
    return jsonify({"query": params.q, "suggestions": [dataclasses.asdict(s) for s in found]})


@blueprint.get("/understand")
@role_required(Role.SEARCH, "understand")
def understand():
    query = request.args.get("q")
    if not query:
        raise InputError("required: the query text", "q")
    return jsonify(_service().understand(query).to_dict())


@blueprint.get("/knowledge/<path:kid>")
@role_required(Role.SEARCH, "knowledge")
def knowledge(kid: str):
    record = _service().get(kid)
    if record is None:
        raise NotFoundError(f"no record with kid {kid!r}", "kid")
    return jsonify(record.to_dict())
