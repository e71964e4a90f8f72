"""What query understanding knows about one KB version (`KbDictionary`, stored with the version) and the
settings it runs under (`UnderstandingConfig`, config.yaml's query_understanding section)."""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property

from query_understanding.attributes import ATTRIBUTE_SIGNALS
from query_understanding.classifiers import (
    DEFAULT_INTENT_EXAMPLES,
    DEFAULT_INTENT_RULES,
    IntentRule,
)
from query_understanding.linking import MIN_ALIAS_CHARS, NameIndex
from query_understanding.normalise import alias_key, normalise_text
from query_understanding.segmenter import Segmenter
from query_understanding.value_shapes import SHAPE_QUESTIONS, attribute_shapes, default_shape_questions

DEFAULT_STOP_WORDS = (
    "的", "了", "吗", "呢", "啊", "吧", "是", "什么", "是什么", "多少", "哪", "哪里", "哪个", "怎么", "如何",
    "有", "在", "用", "请问", "一下", "和", "与", "及", "the", "of", "a", "an", "is", "what", "in", "which",
)


_ALIAS_SEPARATORS = re.compile(r"[,，;；、|]")


@dataclass(frozen=True)
class UnderstandingConfig:
    max_query_length: int = 2000  # a pasted sentence or definition is a query; longer input is refused
    max_text_terms: int = 64  # a long query's distinct content tokens beyond this do not become text terms
    max_embedding_chars: int = 512  # the encoder reads at most this much of a query
    stop_words: tuple[str, ...] = DEFAULT_STOP_WORDS
    attribute_synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    attribute_questions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    attribute_examples: dict[str, tuple[str, ...]] = field(default_factory=dict)
    attribute_signals: tuple[str, ...] = ATTRIBUTE_SIGNALS  # what ranks attributes beyond the lexicon
    attribute_overlap_weight: float = 0.5  # share of word overlap (vs embedding cosine) in ranking attributes
    # question forms per value shape (query_understanding/value_shapes.py), and what they count for beside an
    # attribute's own words
    value_shape_questions: dict[str, tuple[str, ...]] = field(default_factory=default_shape_questions)
    attribute_shape_weight: float = 0.8
    attribute_temperature: float = 0.05
    fit_entity_links: bool = True  # fit the entity-link model on the served KB; false: the built-in weights
    min_entity_chars: int = 2
    fuzzy_linking: bool = True
    alias_attributes: tuple[str, ...] = ()
    pinyin_confidence: float = 0.8
    min_latin_similarity: float = 88.0
    intent_rules: tuple[IntentRule, ...] = DEFAULT_INTENT_RULES
    intent_examples: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_INTENT_EXAMPLES))
    intent_rule_weight: float = 0.7
    intent_temperature: float = 0.05
    category_keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    category_prototype_weight: float = 0.3
    category_temperature: float = 0.05

    def __post_init__(self):
        for name in ("intent_rule_weight", "category_prototype_weight", "pinyin_confidence",
                     "attribute_overlap_weight", "attribute_shape_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        unknown = set(self.attribute_signals) - set(ATTRIBUTE_SIGNALS)
        if unknown:
            raise ValueError(f"attribute_signals: expected some of {', '.join(ATTRIBUTE_SIGNALS)}, "
                             f"got {', '.join(sorted(unknown))}")
        unknown = set(self.value_shape_questions) - set(SHAPE_QUESTIONS)
        if unknown:
            raise ValueError(f"value_shape_questions: expected shapes among {', '.join(SHAPE_QUESTIONS)}, "
                             f"got {', '.join(sorted(unknown))}")
        if min(self.intent_temperature, self.category_temperature, self.attribute_temperature) <= 0:
            raise ValueError("temperatures must be > 0")
        if min(self.max_query_length, self.max_text_terms, self.max_embedding_chars) < 1:
            raise ValueError("max_query_length, max_text_terms and max_embedding_chars must be >= 1")


@dataclass(frozen=True)
class KbDictionary:
    """What query understanding knows about one KB version: its entity and attribute names, and aliases.

    Keys are normalised names. Entity keys map to every stored spelling (貝爾維爾 and 贝尔维尔 are two cities
    with one normalised key); keyword term clauses must use a stored spelling. `aliases` maps the alias key
    (see `alias_key`) of every other name a record lists for its entity to that entity's key; a name that
    several entities share is left out, as it cannot say which one is meant.
    """

    entity_names: dict[str, list[str]]
    entity_categories: dict[str, dict[str, int]]
    attribute_names: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)
    # How often each entity name occurs as an ordinary word in a sample of the KB's values (names never seen
    # are left out), and a sample of (entity, attribute, value) records: entity linking's evidence and
    # training examples, drawn when the version is built.
    mentions: dict[str, int] = field(default_factory=dict)
    mention_sample: int = 0
    samples: list[tuple[str, str, str]] = field(default_factory=list)
    # Each category's attributes: a question about an entity is ranked against what its category holds.
    category_attributes: dict[str, list[str]] = field(default_factory=dict)
    # The entity-link model fitted when the version was built, with the fingerprint of the understanding
    # settings and encoder it was fitted under: opening the version under the same ones skips the fit.
    link_model: dict = field(default_factory=dict)
    pinyin_keys: dict[str, str] | None = None  # fuzzy linking's index keys, computed at build (None: not stored)
    segmenter_words: dict | None = None  # `Segmenter.added_words()` of the user words, computed at build
    attribute_shapes: dict[str, str] = field(default_factory=dict)  # what each attribute's values look like
    # Example questions per attribute that an analyst approved from what users clicked (kb suggest-understanding)
    learned_phrasings: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_pairs(cls, entity_category_pairs, attributes,
                   entity_alias_lists: Iterable[tuple[str, str]] = ()) -> KbDictionary:
        """`entity_alias_lists`: (entity, value) of the records whose attribute lists other names for it."""
        names: dict[str, list[str]] = {}
        categories: dict[str, Counter] = {}
        for entity, category in entity_category_pairs:
            spellings = names.setdefault(normalise_text(entity), [])
            if entity not in categories:
                spellings.append(entity)
            categories.setdefault(entity, Counter())[category] += 1
        owners: dict[str, set[str]] = {}
        for entity, listed in entity_alias_lists:
            for alias in _ALIAS_SEPARATORS.split(listed):
                key = alias_key(alias)
                if len(key) >= MIN_ALIAS_CHARS and key not in names:
                    owners.setdefault(key, set()).add(normalise_text(entity))
        aliases = {key: next(iter(entities)) for key, entities in owners.items() if len(entities) == 1}
        return cls(names, {name: dict(counts) for name, counts in categories.items()},
                   {normalise_text(a): a for a in attributes}, aliases)

    def with_samples(self, records: list[tuple[str, str, str, str]], mention_values: int = 10_000,
                     examples: int = 3_000, seed: int = 0) -> KbDictionary:
        """This dictionary with each category's attributes, name statistics counted over `mention_values` of
        the (entity, attribute, value, category) records' values and `examples` other records kept as
        linking's training sample (disjoint, drawn reproducibly)."""
        by_category: dict[str, set[str]] = {}
        for _, attribute, _, category in records:
            by_category.setdefault(category, set()).add(attribute)
        triples = [(entity, attribute, value) for entity, attribute, value, _ in records]
        rng = random.Random(seed)
        drawn = rng.sample(triples, min(len(triples), mention_values + examples))
        counted, kept = drawn[:mention_values], drawn[mention_values:] or drawn[:examples]
        mentions: Counter = Counter()
        for entity, _, value in counted:
            own = normalise_text(entity)
            found = {span.name for span in self.name_index.longest_matches(normalise_text(value), 2)}
            mentions.update(found - {own})
        return replace(self, mentions=dict(mentions), mention_sample=len(counted), samples=list(kept),
                       category_attributes={c: sorted(a) for c, a in by_category.items()},
                       attribute_shapes=attribute_shapes((attribute, value) for _, attribute, value in triples))

    def with_learned(self, phrasings: dict[str, tuple[str, ...]], aliases: dict[str, str]) -> KbDictionary:
        """This dictionary with approved phrasings of its attributes and approved aliases of its entities; those
        naming an attribute or entity it lacks, or an alias that is already a name, do not apply."""
        known = set(self.attribute_names.values())
        entity_keys = {normalise_text(spelling): key for key, spellings in self.entity_names.items()
                       for spelling in spellings}
        added = {key: entity_keys[normalise_text(entity)] for alias, entity in aliases.items()
                 if len(key := alias_key(alias)) >= MIN_ALIAS_CHARS and key not in self.entity_names
                 and normalise_text(entity) in entity_keys}
        return replace(self, aliases={**self.aliases, **added},
                       learned_phrasings={a: sorted(texts) for a, texts in phrasings.items() if a in known})

    @cached_property
    def name_index(self) -> NameIndex:
        """Every entity name in one automaton, built once per opened version and shared with the dictionaries
        a build derives from this one (`replace` keeps the same names)."""
        return _shared_name_index(self.entity_names)

    def ordinary_rate(self, name: str) -> float:
        """How often `name` (a normalised entity name) occurs inside other records' values, smoothed."""
        return (self.mentions.get(name, 0) + 0.5) / (self.mention_sample + 1.0)

    @classmethod
    def from_json(cls, raw: dict) -> KbDictionary:
        """Versions stored before aliases or name statistics existed read with none."""
        return cls(raw["entity_names"], raw["entity_categories"], raw["attribute_names"], raw.get("aliases", {}),
                   raw.get("mentions", {}), raw.get("mention_sample", 0),
                   [tuple(sample) for sample in raw.get("samples", [])], raw.get("category_attributes", {}),
                   raw.get("link_model", {}), raw.get("pinyin_keys"), raw.get("segmenter_words"),
                   raw.get("attribute_shapes", {}), raw.get("learned_phrasings", {}))

    def to_json(self) -> dict:
        return {"entity_names": self.entity_names, "entity_categories": self.entity_categories,
                "attribute_names": self.attribute_names, "aliases": self.aliases, "mentions": self.mentions,
                "mention_sample": self.mention_sample, "samples": self.samples,
                "category_attributes": self.category_attributes, "link_model": self.link_model,
                "pinyin_keys": self.pinyin_keys, "segmenter_words": self.segmenter_words,
                "attribute_shapes": self.attribute_shapes, "learned_phrasings": self.learned_phrasings}

    def user_words(self) -> list[str]:
        return [*self.entity_names, *self.attribute_names]

    def segmenter(self) -> Segmenter:
        """jieba with this KB's names, restored from the words stored at build when there are any."""
        return Segmenter(self.user_words(), added=self.segmenter_words)


_last_index: tuple[dict, NameIndex] | None = None
_index_lock = threading.Lock()


def _shared_name_index(names: dict[str, list[str]]) -> NameIndex:
    """The automaton of `names`, reused when the last one built was over this very mapping: a version build
    derives several dictionaries (samples, learned phrasings, link model, segmenter words) from one set of
    names, and each would otherwise build it again (0.7 s on kb-large)."""
    global _last_index
    with _index_lock:
        if _last_index is not None and _last_index[0] is names:
            return _last_index[1]
        index = NameIndex(names)
        _last_index = (names, index)
        return index
