"""The knowledge-quality pass of a reload: records that say the same thing once.

Model extraction produces the same fact twice with a particle or punctuation of difference (杭州的人口 /
杭州人口). Such records merge, keeping the expert-verified one, else the more confident, else the newer.
"""

from __future__ import annotations

from dataclasses import dataclass

from kb_service.records import KnowledgeRecord
from query_understanding.normalise import duplicate_key


@dataclass(frozen=True)
class Merge:
    kept: str
    dropped: str


def _preference(record: KnowledgeRecord) -> tuple:
    confidence = -1.0 if record.confidence is None else record.confidence
    return (record.expert_verified, confidence, record.update_timestamp)


def merge_near_duplicates(records: list[KnowledgeRecord], particles: str) -> tuple[list[KnowledgeRecord], list[Merge]]:
    """Records in input order with near-duplicates merged, and the merges made."""
    best: dict[tuple, KnowledgeRecord] = {}
    merges: list[Merge] = []
    for record in records:
        key = (record.category, *(duplicate_key(t, particles) for t in (record.knowledge, record.attribute,
                                                                          record.value)))
        held = best.get(key)
        if held is None:
            best[key] = record
        elif _preference(record) > _preference(held):
            best[key] = record
            merges.append(Merge(kept=record.kid, dropped=held.kid))
        else:
            merges.append(Merge(kept=held.kid, dropped=record.kid))
    kept = {id(r) for r in best.values()}
    return [r for r in records if id(r) in kept], merges
