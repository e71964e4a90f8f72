"""The knowledge-quality pass of a reload: records that say the same thing once.

Model extraction produces the same fact twice with a particle or punctuation of difference (杭州的人口 /
杭州人口). Such records merge, keeping the expert-verified one, else the more confident, else the newer.
"""

from __future__ import annotations

from collections import Counter
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
    """Records in input order with near-duplicates merged, and the merges made.

    Two records can only merge when their category, entity and attribute agree, so values (nearly all
    distinct, and the costly texts to normalise) are compared only inside groups of more than one record."""
    keys: dict[str, str] = {}  # entity and attribute names repeat across a KB's records: normalise each once

    def key_of(text: str) -> str:
        found = keys.get(text)
        if found is None:
            found = keys[text] = duplicate_key(text, particles)
        return found

    groups = [(record.category, key_of(record.knowledge), key_of(record.attribute)) for record in records]
    sizes = Counter(groups)
    best: dict[tuple, KnowledgeRecord] = {}
    merges: list[Merge] = []
    dropped: set[int] = set()
    for record, group in zip(records, groups, strict=True):
        if sizes[group] == 1:
            continue
        key = (*group, duplicate_key(record.value, particles))
        held = best.get(key)
        if held is None:
            best[key] = record
        elif _preference(record) > _preference(held):
            best[key] = record
            merges.append(Merge(kept=record.kid, dropped=held.kid))
            dropped.add(id(held))
        else:
            merges.append(Merge(kept=held.kid, dropped=record.kid))
            dropped.add(id(record))
    return [r for r in records if id(r) not in dropped], merges
