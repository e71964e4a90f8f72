"""Index settings, mapping and documents of a version: mappings/*.json plus what the config decides."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import numpy as np

from kb_service.config import BUNDLED, ElasticsearchConfig, EngineConfig
from kb_service.engines.elastic.dialect import Dialect
from kb_service.engines.elastic.dsl import VECTOR_FIELD, vector_list
from kb_service.records import KNOWN_FIELDS, KnowledgeRecord
from scoring.plan import TEXT_FIELD_SOURCES

OPTIONAL_FIELDS = ("confidence", "ref", "create_timestamp", "update_timestamp", "expires_at")


def read_mapping(name: str) -> dict:
    """mappings/NAME as shipped with the package."""
    return json.loads((BUNDLED / "mappings" / name).read_text(encoding="utf-8"))


def version_index_body(dialect: Dialect, settings: ElasticsearchConfig, engine: EngineConfig, dims: int) -> dict:
    """mappings/knowledge.json with the engine's vector field for the encoder's dimensions, the BM25
    parameters and the production settings of the config (the ones that can only be set at creation)."""
    body = copy.deepcopy(read_mapping("knowledge.json"))
    index = body["settings"]
    index["number_of_shards"] = settings.shards
    index["number_of_replicas"] = 0
    index["similarity"]["kb_bm25"].update(k1=engine.bm25_k1, b=engine.bm25_b)
    index["search.slowlog.threshold.query.warn"] = settings.search_slowlog
    if settings.node_group:
        index["routing.allocation.require.node_group"] = settings.node_group
    if settings.store_preload:
        index["store.preload"] = list(settings.store_preload)
    if settings.sort_during_load:
        index["sort.field"] = ["kid", "confidence"]
        index["sort.order"] = ["asc", "desc"]
    index.update(dialect.index_settings())
    properties = body["mappings"]["properties"]
    properties[VECTOR_FIELD] = dialect.vector_mapping(properties[VECTOR_FIELD], dims, settings)
    return body


def loading_settings(settings: ElasticsearchConfig) -> dict:
    """While bulk loading: no refreshes, no replicas, optionally an async translog."""
    out = {"refresh_interval": "-1", "number_of_replicas": 0}
    if settings.async_translog_during_load:
        out["translog.durability"] = "async"
    return out


def serving_settings(settings: ElasticsearchConfig) -> dict:
    return {"refresh_interval": "1s", "number_of_replicas": settings.replicas, "translog.durability": "request"}


def to_document(record: KnowledgeRecord, vector: np.ndarray, segmented: Callable[[str], str]) -> dict:
    """The record's fields, the service's segmentation of its texts, and its vector."""
    document = record.to_dict()
    for name in OPTIONAL_FIELDS:
        if document[name] in (None, ""):
            del document[name]
    for field, source in TEXT_FIELD_SOURCES.items():
        document[field] = segmented(getattr(record, source))
    document[VECTOR_FIELD] = vector_list(vector)
    return document


def from_source(source: dict) -> KnowledgeRecord:
    """A record from a document this service indexed (validated when it was loaded)."""
    return KnowledgeRecord.from_stored({k: v for k, v in source.items() if k in KNOWN_FIELDS})
