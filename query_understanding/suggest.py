"""Type-ahead: entity names that a partly typed query starts, by the characters typed, by pinyin (`hangz` →
杭州), by initials (`hz` → 杭州) or by another listed name (an alias), forgiving one typo.

The index is a sorted array of folded keys (UTF-8 bytes, so a prefix is one binary search) pointing at
entities, built from a version's stored dictionary: its names, aliases and the pinyin computed when the
version was built. Entities are ranked by what the KB says of their weight (how many records describe them,
how often other records name them, how many other names it lists for them) and by how often users asked
for them, never by a list of names.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pypinyin import lazy_pinyin

from query_understanding.dictionary import KbDictionary
from query_understanding.normalise import alias_key

KEY_BYTES = 48  # keys are compared on their first 48 UTF-8 bytes: nobody types a longer prefix
_KEY_TYPE = f"S{KEY_BYTES + 1}"  # room for a prefix's upper bound (the prefix and 0xFF, never in UTF-8)
MAX_QUERY_CHARS = 64
NAME, PINYIN, INITIALS, ALIAS = range(4)
HOW = ("name", "pinyin", "initials", "alias")
# Typed characters of the name first, then its sound (how Chinese is typed), then other names: a foreign
# spelling should not push aside the name whose pinyin the user is typing.
PREFERENCE = (2, 1, 1, 0)
RANGE_SCAN = 64  # the most popular entries of a prefix's range that are ranked in full
_LATIN = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Suggestion:
    text: str  # the entity's name as stored
    matched: str  # the key the prefix matched (a name, its pinyin or initials, an alias)
    how: str  # name, pinyin, initials or alias
    typo: bool  # matched only with one character changed, added, dropped or swapped
    records: int
    score: float


def _one_edit(text: str) -> set[str]:
    """Every string one deletion, transposition, substitution or insertion away (Latin letters and digits
    only: a Chinese typo is caught through its pinyin)."""
    out = {text[:i] + text[i + 1:] for i in range(len(text))}
    out |= {text[:i] + text[i + 1] + text[i] + text[i + 2:] for i in range(len(text) - 1)}
    if text.isascii():
        out |= {text[:i] + c + text[i + 1:] for i in range(len(text)) for c in _LATIN}
        out |= {text[:i] + c + text[i:] for i in range(len(text) + 1) for c in _LATIN}
    out.discard(text)
    return {variant for variant in out if variant}


class SuggestIndex:
    """Prefix lookups over every entity's keys; `popularity` is per entity (higher first)."""

    def __init__(self, names: list[str], records: np.ndarray, popularity: np.ndarray, keys: list[tuple[str, int, int]]):
        self.names = names
        self.records = records
        self.popularity = popularity
        keys.sort()  # code-point order is UTF-8 byte order, and cutting keys to KEY_BYTES keeps it
        self.keys = np.array([key.encode("utf-8")[:KEY_BYTES] for key, _, _ in keys], dtype=_KEY_TYPE)
        self.entity = np.array([entity for _, entity, _ in keys], dtype=np.int32)
        self.how = np.array([how for _, _, how in keys], dtype=np.int8)

    @classmethod
    def build(cls, dictionary: KbDictionary, asked: Mapping[str, int] | None = None) -> SuggestIndex:
        """From a version's dictionary; `asked` counts how often users' queries named each entity (by the
        normalised name key), from the query log, when there is one."""
        names: list[str] = []
        records: list[int] = []
        popularity: list[float] = []
        keys: list[tuple[str, int, int]] = []
        pinyin = dictionary.pinyin_keys or {}
        other_names = Counter(dictionary.aliases.values())  # a well-known entity is listed under many names
        for key, spellings in dictionary.entity_names.items():
            entity = len(names)
            name = spellings[0]
            count = sum(sum(dictionary.entity_categories.get(s, {}).values()) for s in spellings)
            names.append(name)
            records.append(count)
            popularity.append(math.log1p(count) + math.log1p(dictionary.mentions.get(key, 0))
                              + math.log1p(other_names[key]) + 2 * math.log1p((asked or {}).get(key, 0)))
            folded = alias_key(name)
            if folded:
                keys.append((folded, entity, NAME))
            syllables = pinyin.get(key)
            if syllables:
                keys.append((syllables.replace(" ", ""), entity, PINYIN))
                keys.append(("".join(s[0] for s in syllables.split()), entity, INITIALS))
        entity_of = {key: n for n, key in enumerate(dictionary.entity_names)}
        for alias, owner in dictionary.aliases.items():
            if owner in entity_of:
                keys.append((alias, entity_of[owner], ALIAS))
        return cls(names, np.array(records, dtype=np.int64), np.array(popularity, dtype=np.float64), keys)

    def _best(self, prefixes: list[str]) -> list[int]:
        """Positions of the most popular entries whose key starts with one of `prefixes` (one vectorised
        binary search for them all)."""
        encoded = [p.encode("utf-8")[:KEY_BYTES] for p in prefixes]
        starts = np.searchsorted(self.keys, np.array(encoded, dtype=_KEY_TYPE), "left")
        ends = np.searchsorted(self.keys, np.array([e + b"\xff" for e in encoded], dtype=_KEY_TYPE), "left")
        positions: list[int] = []
        for start, end in zip(starts[starts < ends].tolist(), ends[starts < ends].tolist(), strict=True):
            if end - start <= RANGE_SCAN:
                positions.extend(range(start, end))
            else:
                weights = self.popularity[self.entity[start:end]]
                positions.extend((start + np.argpartition(-weights, RANGE_SCAN - 1)[:RANGE_SCAN]).tolist())
        return positions

    def suggest(self, text: str, size: int = 5) -> list[Suggestion]:
        """The `size` best entities the typed `text` may be starting; exact prefixes before one-edit ones,
        a whole-key match before a longer key, then by PREFERENCE and popularity."""
        query = alias_key(text[:MAX_QUERY_CHARS])
        if not query:
            return []
        found: dict[int, tuple[tuple, Suggestion]] = {}

        def consider(positions: list[int], typo: bool) -> None:
            for position in positions:
                entity = int(self.entity[position])
                matched = self.keys[position].decode("utf-8", "ignore")
                how = int(self.how[position])
                rank = (not typo, matched == query, PREFERENCE[how], float(self.popularity[entity]))
                if entity not in found or rank > found[entity][0]:
                    found[entity] = (rank, Suggestion(self.names[entity], matched, HOW[how], typo,
                                                      int(self.records[entity]), round(rank[-1], 4)))

        consider(self._best([query]), typo=False)
        sounds = "".join(lazy_pinyin(query)) if not query.isascii() else ""
        if sounds and sounds != query:
            consider([p for p in self._best([sounds]) if self.how[p] == PINYIN], typo=False)
        if len(found) < size and len(query) >= 2:
            variants = sorted(_one_edit(sounds or query))
            consider([p for p in self._best(variants) if not sounds or self.how[p] == PINYIN], typo=True)
        ranked = sorted(found.values(), key=lambda item: item[0], reverse=True)
        return [suggestion for _, suggestion in ranked[:size]]
