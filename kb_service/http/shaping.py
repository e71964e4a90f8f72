"""A search response as the API's JSON (`models.py` documents the shape): the search service answers with
typed hits, and this module alone decides which fields, explanations and highlights a caller sees."""

from __future__ import annotations

from kb_service.serving.highlight import highlights
from kb_service.serving.request import HitShape
from kb_service.serving.service import SearchResponse
from scoring.hits import ScoredHit


def search_body(response: SearchResponse, offset: int, explain: bool, shape: HitShape) -> dict:
    """The body of a search answer; `offset` numbers the ranks, `explain` adds stages, per-hit explanations
    and the parsed query."""
    return {
        "query": response.parsed.original,
        "total": response.total,
        "total_relation": "eq",
        "took_ms": round(response.took_ms, 2),
        **({"stages_ms": {k: round(v, 3) for k, v in response.stages_ms.items()}} if explain else {}),
        "index_version": response.version,
        "config_version": response.config_version,
        "mode": response.mode,
        "hits": [_hit(response, hit, rank, explain, shape)
                 for rank, hit in enumerate(response.hits, start=offset + 1)],
        **({"facets": {field: [{"value": value, "count": count} for value, count in counts]
                       for field, counts in response.facets.items()}}
           if response.plan and response.plan.facets else {}),
        **({"parsed_query": response.parsed.to_dict()} if explain else {}),
    }


def _hit(response: SearchResponse, hit: ScoredHit, rank: int, explain: bool, shape: HitShape) -> dict:
    """One hit as the API shows it: its rank, score, the chosen record fields and components, with the
    explanation and highlights when asked for."""
    record = hit.record.to_dict()
    shown = record if shape.fields is None else {k: v for k, v in record.items() if k in shape.fields}
    out = {"rank": rank, "score": round(hit.score, 6), **shown,
           "components": {c.name: round(c.contribution, 6) for c in hit.components}}
    if explain:
        out["explain"] = [{"stage": c.stage, "name": c.name, "raw": c.raw, "weight": c.weight,
                           "contribution": c.contribution} for c in hit.components]
        out["text_clauses"] = hit.details
    if shape.highlight is not None and response.segmenter is not None:
        light = shape.highlight
        out["highlight"] = highlights(record, response.parsed, response.segmenter, light.fields, light.pre_tag,
                                      light.post_tag)
    return out
