"""The API's OpenAPI 3.1 description, generated from the pydantic models that validate its requests (and
models of its answers), with the limits of the config in force, and served at `/openapi.json` and `/docs`.

The document lists the versioned paths (`/v1/...`); the unversioned ones answer the same until they are
retired, with a `Deprecation` header naming their successor.
"""

from __future__ import annotations

import copy
import html
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kb_service.config import ServiceConfig
from kb_service.feedback.events import MAX_ID, EventsBody
from kb_service.feedback.judgments import JudgmentInput
from kb_service.http.admin import ReloadBody, RollbackBody
from kb_service.http.models import (
    Accepted,
    ErrorAnswer,
    IngestReport,
    ParsedQuery,
    Record,
    RecordIn,
    SearchAnswer,
    Suggestions,
)
from kb_service.http.search import SuggestParameters
from kb_service.records import KNOWN_FIELDS
from kb_service.serving.request import MAX_TAG_LENGTH, SORT_CHOICES, SearchParameters
from scoring.plan import FACET_FIELDS

API_PREFIX = "/v1"
QUERY_PATTERN = "[0-9A-Za-z\\u4e00-\\u9fa5]"  # the understander refuses a query with none of these
@dataclass(frozen=True)
class Operation:
    """One documented operation: where, what it takes and what it answers."""

    method: str
    path: str
    summary: str
    statuses: tuple[int, ...]
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    parameters: tuple[dict, ...] = ()
    role: Literal["public", "search", "analyst", "admin", "ingest"] = "search"
    content: str = "application/json"
    extra: dict = field(default_factory=dict)


def _comma_list(names: tuple[str, ...] | list[str]) -> dict:
    choice = "|".join(sorted(names, key=len, reverse=True))
    return {"type": "string", "pattern": f"^({choice})(,({choice}))*$"}


def _parameters(model: type[BaseModel]) -> tuple[dict, ...]:
    """A flat model's fields as query parameters."""
    schema = model.model_json_schema()
    return tuple({"name": name, "in": "query", "required": name in schema.get("required", ()),
                  "schema": {k: v for k, v in spec.items() if k not in ("title", "description")},
                  **({"description": spec["description"]} if "description" in spec else {})}
                 for name, spec in schema["properties"].items())


def _configured_limits(config: ServiceConfig) -> dict[str, dict]:
    """The schemas of `q`, `size` and `from` under this config's limits, for the GET form and the body alike."""
    return {"q": {"type": "string", "minLength": 1, "maxLength": config.query_understanding.max_query_length,
                  "pattern": QUERY_PATTERN},
            "size": {"type": "integer", "minimum": 1, "maximum": config.search.max_size},
            "from": {"type": "integer", "minimum": 0, "maximum": config.search.max_offset}}


def _search_parameters(config: ServiceConfig) -> tuple[dict, ...]:
    limits = _configured_limits(config)
    return (
        {"name": "q", "in": "query", "required": True, "description": "the query text", "schema": limits["q"]},
        {"name": "size", "in": "query", "schema": {**limits["size"], "default": config.search.default_size}},
        {"name": "from", "in": "query", "schema": {**limits["from"], "default": 0}},
        {"name": "category", "in": "query", "description": "comma-separated categories", "schema": {"type": "string"}},
        {"name": "mode", "in": "query", "schema": {"type": "string", "enum": ["exact", "fast"]}},
        {"name": "explain", "in": "query", "schema": {"type": "boolean", "default": False}},
        {"name": "sort", "in": "query", "schema": {"type": "string", "enum": list(SORT_CHOICES)}},
        {"name": "fields", "in": "query", "description": "comma-separated record fields",
         "schema": _comma_list(sorted(KNOWN_FIELDS))},
        {"name": "highlight", "in": "query", "schema": {"type": "boolean", "default": False}},
        {"name": "facets", "in": "query", "description": "comma-separated facet fields",
         "schema": _comma_list(FACET_FIELDS)},
        {"name": "facet_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    )


def operations(config: ServiceConfig) -> list[Operation]:
    errors = (400, 401, 429)
    return [
        Operation("get", "/search", "Ranked hits for a query (filters only in the POST form)", (200, *errors, 503),
                  answer=SearchAnswer, parameters=_search_parameters(config)),
        Operation("post", "/search", "Ranked hits for a query: filters, sort, fields, highlight, facets",
                  (200, *errors, 413, 503), body=SearchParameters, answer=SearchAnswer),
        Operation("post", "/events", "The front end's impressions and clicks under a search's query_id",
                  (202, *errors, 404, 413), body=EventsBody, answer=Accepted),
        Operation("get", "/suggest", "Type-ahead: entity names by prefix, pinyin, initials or alias, one typo allowed",
                  (200, *errors, 503), answer=Suggestions, parameters=_parameters(SuggestParameters)),
        Operation("get", "/understand", "The parsed query", (200, *errors, 503), answer=ParsedQuery,
                  parameters=(_search_parameters(config)[0],)),
        Operation("get", "/knowledge/{kid}", "One record by kid", (200, 401, 404, 429, 503), answer=Record,
                  parameters=({"name": "kid", "in": "path", "required": True,
                               "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID}},)),
        Operation("post", "/records", "Submit records for review (NDJSON or a JSON array; ingest or admin key)",
                  (200, 400, 401, 403, 413, 429), answer=IngestReport, role="ingest",
                  extra={"requestBody": {"required": True, "content": {
                      "application/json": {"schema": {"type": "array", "minItems": 1,
                                                      "maxItems": config.reload.ingest_max_records,
                                                      "items": {"$ref": "#/components/schemas/RecordIn"}}},
                      "application/x-ndjson": {"schema": {"type": "string", "description": "one record per line"}}}}}),
        Operation("get", "/admin/config", "The live config version, its file and the last reload error",
                  (200, 401, 403, 429), role="admin"),
        Operation("post", "/admin/config/reload", "Re-read the config file now; an invalid one is refused",
                  (200, 400, 401, 403, 409, 429), role="admin"),
        Operation("post", "/admin/reload", "Gated reload from the review database (202 started, 200 with wait)",
                  (200, 202, 400, 401, 403, 409, 429), body=ReloadBody, role="admin"),
        Operation("get", "/admin/reloads", "Reload history, newest first", (200, 400, 401, 403, 429), role="admin",
                  parameters=({"name": "limit", "in": "query",
                               "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 20}},)),
        Operation("get", "/admin/versions", "Index versions with their manifests", (200, 401, 403, 429),
                  role="admin"),
        Operation("post", "/admin/rollback", "Serve an earlier version again", (200, 400, 401, 403, 409, 429),
                  body=RollbackBody, role="admin"),
    ]


UNVERSIONED = [  # operations and pages outside the versioned API: probes, metrics, the console
    Operation("get", "/healthz", "The process is up", (200,), role="public"),
    Operation("get", "/readyz", "An index version is served", (200, 503), role="public"),
    Operation("get", "/metrics", "Prometheus text format", (200,), role="public", content="text/plain"),
    Operation("get", "/openapi.json", "This document", (200,), role="public"),
    Operation("get", "/docs", "The operations as a page (HTML)", (200,), role="public", content="text/html"),
    Operation("get", "/console", "The analyst console (HTML)", (200, 400, 401, 403, 404, 429), role="analyst",
              content="text/html", parameters=({"name": "q", "in": "query",
                                                "schema": {"type": "string", "maxLength": 2000}},)),
    Operation("get", "/console/compare", "The console's A/B page (HTML)", (200, 401, 403, 404, 429),
              role="analyst", content="text/html",
              parameters=({"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 2000}},)),
    Operation("post", "/console/compare", "A candidate config (YAML) beside the live one on a query (HTML)",
              (200, 400, 401, 403, 404, 413, 429), role="analyst", content="text/html",
              extra={"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                  "type": "object", "properties": {"q": {"type": "string", "maxLength": 2000},
                                                   "config": {"type": "string"}}}}}}}),
    Operation("get", "/console/insights", "Frequent recent queries that went unserved (HTML)",
              (200, 401, 403, 404, 429), role="analyst", content="text/html"),
    Operation("post", "/console/judgments", "Rate a hit 0–3 for a query", (201, 400, 401, 403, 404, 429),
              body=JudgmentInput, role="analyst"),
]

SECURITY: dict[str, list[dict[str, list]]] = {
    "public": [], "search": [{}, {"apiKey": []}, {"bearer": []}, {"basic": []}],
    "ingest": [{"apiKey": []}, {"bearer": []}],
    "analyst": [{"apiKey": []}, {"bearer": []}, {"basic": []}], "admin": [{"apiKey": []}, {"bearer": []}]}


def document(config: ServiceConfig, version: str) -> dict:
    """The OpenAPI document for `config`'s limits."""
    versioned = [(API_PREFIX + op.path, op) for op in operations(config)]
    every = versioned + [(op.path, op) for op in UNVERSIONED]
    models: set[type[BaseModel]] = {model for _, op in every for model in (op.body, op.answer) if model}
    models |= {ErrorAnswer, RecordIn}
    ordered: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (m, "validation") for m in sorted(models, key=lambda m: m.__name__)]
    keyed, definitions = models_json_schema(ordered, ref_template="#/components/schemas/{model}")
    schemas = copy.deepcopy(definitions.get("$defs", {}))
    _tighten_search(schemas, config)
    paths: dict[str, dict] = {}
    error_schema = keyed[(ErrorAnswer, "validation")]
    for path, op in every:
        entry: dict[str, Any] = {"summary": op.summary, "operationId": f"{op.method}_{path}",
                                 "security": SECURITY[op.role], "responses": {}}
        if op.parameters:
            entry["parameters"] = list(op.parameters)
        if op.body:
            entry["requestBody"] = {"required": op.body is not ReloadBody and op.body is not RollbackBody,
                                    "content": {"application/json": {"schema": keyed[(op.body, "validation")]}}}
        entry.update(op.extra)
        for status in op.statuses:
            if status < 300:
                answer = ({"schema": keyed[(op.answer, "validation")]} if op.answer
                          else {"schema": {"type": "string"} if op.content != "application/json" else {}})
                entry["responses"][str(status)] = {"description": "success", "content": {op.content: answer}}
            elif status == 400 and op.content == "text/html":  # a page says what is wrong on the page
                entry["responses"]["400"] = {"description": "the page naming the problem, or the JSON error",
                                             "content": {"text/html": {"schema": {"type": "string"}},
                                                         "application/json": {"schema": error_schema}}}
            else:
                entry["responses"][str(status)] = {"$ref": "#/components/responses/Error"}
        paths.setdefault(path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "kb-service", "version": version, "description": (
            "Knowledge-base retrieval with hybrid scoring. API keys by role (docs/security.md): search routes need "
            "a search key only when security.search_key_sha256 lists one; the console an analyst key; /v1/admin an "
            "admin key. Send it as X-API-Key, a bearer token, or the password of Basic credentials. Every error is "
            "the JSON shape below with a machine-readable code. The paths without /v1 answer the same and are "
            "deprecated.")},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "bearer": {"type": "http", "scheme": "bearer"},
                                "basic": {"type": "http", "scheme": "basic",
                                          "description": "the key as the password (the user name is ignored)"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {
                "schema": error_schema}}}},
        },
    }


def _tighten_search(schemas: dict, config: ServiceConfig) -> None:
    """The POST body's limits as the config sets them (the models state only what holds for every config)."""
    properties = schemas["SearchParameters"]["properties"]
    limits = _configured_limits(config)
    properties["q"] = {**limits["q"], "description": "the query text"}
    properties["size"] = {**limits["size"], "type": ["integer", "null"]}  # null: the default
    properties["from"] = {**limits["from"], "type": ["integer", "null"]}
    properties["highlight"]["description"] = (f"true, or {{fields, pre_tag, post_tag}} (tags up to {MAX_TAG_LENGTH} "
                                              "characters)")


blueprint = Blueprint("openapi", __name__)


def _document() -> dict:
    cache = current_app.extensions.setdefault("kb_openapi", {})
    config = current_app.extensions["kb_service"].config
    if config.version not in cache:
        cache.clear()
        cache[config.version] = document(config, config.version)
    return cache[config.version]


@blueprint.get("/openapi.json")
def openapi_json():
    return jsonify(_document())


@blueprint.get("/docs")
def docs_page():
    """A plain page listing every operation, its parameters and statuses (no script: the CSP allows none)."""
    rows = []
    for path, methods in _document()["paths"].items():
        for method, op in methods.items():
            takes = [p["name"] for p in op.get("parameters", [])] + (["JSON body"] if "requestBody" in op else [])
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op['summary'])}</td><td>{html.escape(', '.join(takes))}</td>"
                        f"<td>{', '.join(op['responses'])}</td></tr>")
    page = ("<!doctype html><html lang=en><meta charset=utf-8><title>kb-service API</title>"
            "<style>body{font:14px system-ui;margin:2em}td{padding:.2em .8em;border-bottom:1px solid #ddd}</style>"
            "<h1>kb-service API</h1><p>The machine-readable description: <a href=/openapi.json>/openapi.json</a>"
            "</p><table><tr><th>method<th>path<th>what<th>takes<th>answers</th></tr>" + "".join(rows) + "</table>")
    return Response(page, content_type="text/html; charset=utf-8")
