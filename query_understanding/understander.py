"""Turns raw query text into a ParsedQuery: normalise, segment, link KB names, guess intent and categories."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from query_understanding.normalise import normalise_text
from query_understanding.parsed_query import LinkedSpan, ParsedQuery
from query_understanding.segmenter import Segmenter

DEFAULT_STOP_WORDS = (
    "的", "了", "吗", "呢", "啊", "吧", "是", "什么", "是什么", "多少", "哪", "哪里", "哪个", "怎么", "如何",
    "有", "在", "用", "请问", "一下", "和", "与", "及", "the", "of", "a", "an", "is", "what", "in", "which",
)
MAX_LINK_CHARS = 24


class QueryError(ValueError):
    """A query that cannot be searched (empty, too long); the API turns it into a 400 naming field 'q'."""


@dataclass(frozen=True)
class UnderstandingConfig:
    max_query_length: int = 256
    stop_words: tuple[str, ...] = DEFAULT_STOP_WORDS
    attribute_synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    category_keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    min_entity_chars: int = 2


@dataclass(frozen=True)
class KbDictionary:
    """What query understanding knows about one KB version: its entity and attribute names.

    Keys are normalised names; values keep the stored spelling, which keyword term clauses must match.
    """

    entity_names: dict[str, str]
    entity_categories: dict[str, dict[str, int]]
    attribute_names: dict[str, str]

    @classmethod
    def from_pairs(cls, entity_category_pairs, attributes) -> KbDictionary:
        names: dict[str, str] = {}
        categories: dict[str, Counter] = {}
        for entity, category in entity_category_pairs:
            canonical = names.setdefault(normalise_text(entity), entity)
            categories.setdefault(canonical, Counter())[category] += 1
        return cls(names, {name: dict(counts) for name, counts in categories.items()},
                   {normalise_text(a): a for a in attributes})

    def user_words(self) -> list[str]:
        return [*self.entity_names, *self.attribute_names]


def _is_word_char(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _longest_matches(text: str, names: dict[str, str], min_chars: int) -> list[LinkedSpan]:
    """Greedy left-to-right longest match of known names in text; ASCII names must sit on word boundaries."""
    spans, i = [], 0
    while i < len(text):
        matched = None
        for length in range(min(MAX_LINK_CHARS, len(text) - i), 0, -1):
            piece = text[i:i + length]
            if piece not in names or (length < min_chars and piece != text):
                continue
            if _is_word_char(piece[0]) and i > 0 and _is_word_char(text[i - 1]):
                continue
            if _is_word_char(piece[-1]) and i + length < len(text) and _is_word_char(text[i + length]):
                continue
            matched = LinkedSpan(text=piece, name=names[piece], tokens=(), start=i, end=i + length,
                                 confidence=1.0)
            break
        if matched:
            spans.append(matched)
            i = matched.end
        else:
            i += 1
    return spans


class QueryUnderstander:
    def __init__(self, config: UnderstandingConfig, dictionary: KbDictionary, segmenter: Segmenter):
        self.config = config
        self.dictionary = dictionary
        self.segmenter = segmenter
        self._stop_words = frozenset(normalise_text(w) for w in config.stop_words)
        self._attribute_names = dict(dictionary.attribute_names)
        for attribute, synonyms in config.attribute_synonyms.items():
            for synonym in synonyms:
                self._attribute_names.setdefault(normalise_text(synonym), attribute)

    def parse(self, text: str) -> ParsedQuery:
        if not isinstance(text, str) or not text.strip():
            raise QueryError("query is empty")
        if len(text) > self.config.max_query_length:
            raise QueryError(f"query is longer than {self.config.max_query_length} characters")
        normalised = normalise_text(text)
        tokens = tuple(self.segmenter.tokens(normalised))
        entities = self._with_tokens(
            _longest_matches(normalised, self.dictionary.entity_names, self.config.min_entity_chars))
        attributes = self._with_tokens(self._link_attributes(normalised, entities))
        intent = ("attribute_lookup" if entities and attributes else "entity_overview" if entities
                  else "open_question")
        return ParsedQuery(
            original=text,
            normalised=normalised,
            tokens=tokens,
            content_tokens=tuple(t for t in tokens if t not in self._stop_words),
            entities=entities,
            attributes=attributes,
            intent=intent,
            intent_probability=1.0,
            categories=self._categories(normalised, entities),
            embedding_text=normalised,
        )

    def _with_tokens(self, spans: list[LinkedSpan]) -> tuple[LinkedSpan, ...]:
        return tuple(replace(span, tokens=tuple(self.segmenter.tokens(span.name))) for span in spans)

    def _link_attributes(self, normalised: str, entities: tuple[LinkedSpan, ...]) -> list[LinkedSpan]:
        """Attributes are searched outside entity spans, so 人口 inside an entity name is not an attribute."""
        masked = list(normalised)
        for span in entities:
            masked[span.start:span.end] = "\0" * (span.end - span.start)
        return _longest_matches("".join(masked), self._attribute_names, min_chars=1)

    def _categories(self, normalised: str, entities: tuple[LinkedSpan, ...]) -> dict[str, float]:
        votes: Counter = Counter()
        for span in entities:
            counts = self.dictionary.entity_categories.get(span.name, {})
            total = sum(counts.values()) or 1
            for category, count in counts.items():
                votes[category] += count / total
        for category, keywords in self.config.category_keywords.items():
            if any(normalise_text(k) in normalised for k in keywords):
                votes[category] += 1.0
        total = sum(votes.values())
        return {category: round(v / total, 4) for category, v in votes.most_common()} if total else {}
