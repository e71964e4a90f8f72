"""`POST /v1/records`: an upstream extraction pipeline submits knowledge over HTTP.

Each record is validated as `kb load` validates a line (`KnowledgeRecord.from_mapping`) and stored in the
review database, pending review (or approved, per `reload.ingest_status`); the next reload publishes the
approved ones. A bad record is reported by its line (its 1-based position in a JSON array) and the good ones
are kept; storing is idempotent (by kid and content: a record posted again unchanged changes nothing, a
changed one goes back to review). The body is NDJSON read line by line, or a JSON array (or `{"records":
[…]}`); its size is bounded by `server.max_body_bytes` and its count by `reload.ingest_max_records`,
both checked before anything is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Blueprint, current_app, g, jsonify, request

from kb_service.config import Role
from kb_service.errors import InputError, KbError
from kb_service.http.auth import role_required
from kb_service.http.bodies import json_body, parse_json
from kb_service.http.models import MAX_REPORTED
from kb_service.records import KnowledgeRecord, RecordError
from kb_service.reload.review import ReviewDatabase, ReviewStatus

blueprint = Blueprint("ingest", __name__)
audit = logging.getLogger("kb_service.audit")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


def _review_database() -> ReviewDatabase:
    """One review database per process and URL (its engine pools connections)."""
    config = current_app.extensions["kb_service"].config
    url = config.reload.database_url(config.paths)
    databases: dict[str, ReviewDatabase] = current_app.extensions.setdefault("kb_review", {})
    if url not in databases:
        databases[url] = ReviewDatabase(url)
    return databases[url]


def _too_many(limit: int) -> InputError:
    return InputError(f"more than {limit} records in one request (reload.ingest_max_records)", "body",
                      code="too_many")


def _items(limit: int) -> Iterator[tuple[int, object]]:
    """(line, parsed JSON or the InputError of its line) of every record in the body, at most `limit`."""
    if request.mimetype in NDJSON_TYPES:
        count = 0
        for line_number, line in enumerate(request.stream, start=1):
            if not line.strip():
                continue
            count += 1
            if count > limit:
                raise _too_many(limit)
            try:
                yield line_number, parse_json(line)
            except InputError as err:
                yield line_number, err
        return
    body = json_body(required=True)
    if isinstance(body, dict) and isinstance(body.get("records"), list):
        body = body["records"]
    if not isinstance(body, list):
        raise InputError("expected NDJSON (one record per line), a JSON array of records or {\"records\": [...]}",
                         "body", code="not_a_list")
    if len(body) > limit:
        raise _too_many(limit)
    yield from enumerate(body, start=1)


@blueprint.post("/records")
@role_required(Role.INGEST, "records.ingest")
def ingest_records():
    settings = current_app.extensions["kb_service"].config.reload
    accepted: dict[str, KnowledgeRecord] = {}
    rejected: list[dict] = []
    received = 0
    for line, item in _items(settings.ingest_max_records):
        received += 1
        try:
            if isinstance(item, KbError):
                raise item
            record = KnowledgeRecord.from_mapping(item)  # type: ignore[arg-type]
        except RecordError as err:
            rejected.append({"line": line, "field": err.field, "code": "invalid_record",
                             "message": f"line {line}: {err.field}: {err.message}"})
            continue
        except InputError as err:
            rejected.append({"line": line, "field": err.field, "code": err.details.get("code", err.code),
                             "message": f"line {line}: {err.message}"})
            continue
        accepted[record.kid] = record  # a kid posted twice in one batch: the later line wins
    if not received:
        raise InputError("expected at least one record", "body", code="missing_body")
    if not accepted:
        first = rejected[0]
        raise InputError(f"no valid record; {first['message']}", f"line {first['line']}", code="invalid_record",
                         rejected=rejected[:MAX_REPORTED], rejected_count=len(rejected))
    status = ReviewStatus(settings.ingest_status)
    key = g.get("key_id") or "open"
    report = _review_database().import_records(
        accepted.values(), status=status, reviewer=f"ingest:{key}" if status is ReviewStatus.APPROVED else None)
    audit.info("ingest by key %s: %d records received, %d stored as %s (%d new, %d changed), %d rejected", key,
               received, len(accepted), status.value, report.inserted, report.changed, len(rejected))
    return jsonify({"received": received, "accepted": len(accepted), "status": status.value,
                    "inserted": report.inserted, "changed": report.changed, "unchanged": report.unchanged,
                    "rejected_count": len(rejected), "rejected": rejected[:MAX_REPORTED]})
