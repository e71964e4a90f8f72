"""Turns raw query text into a ParsedQuery: normalise, segment, link KB names, classify intent and categories."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from query_understanding.attributes import AttributeRanker
from query_understanding.classifiers import CategoryClassifier, IntentClassifier
from query_understanding.dictionary import KbDictionary, UnderstandingConfig
from query_understanding.evidence import MAX_EXAMPLES, LinkModel, SpanContext, span_features, synthesise_examples
from query_understanding.linking import AliasLinker, FuzzyLinker, NameIndex
from query_understanding.normalise import is_punctuation, normalise_text
from query_understanding.parsed_query import LinkedSpan, ParsedQuery
from query_understanding.segmenter import Segmenter

_SPACES = re.compile(r"\s+")
_QUESTION_PIECE = re.compile(r"[^\0\s\W_]+")


class QueryError(ValueError):
    """A query that cannot be searched (empty, too long); the API turns it into a 400 naming field 'q'."""


class QueryUnderstander:
    def __init__(self, config: UnderstandingConfig, dictionary: KbDictionary, segmenter: Segmenter,
                 embed: Callable[[str], np.ndarray] | None = None,
                 embed_many: Callable[[list[str]], np.ndarray] | None = None,
                 category_centroids: dict[str, np.ndarray] | None = None, model_key: str = ""):
        """`model_key` names the encoder behind `embed`: a link model stored in the dictionary is reused only
        when fitted under the same settings and encoder."""
        self.config = config
        self._fingerprint = hashlib.sha256(f"{config!r}|{model_key}".encode()).hexdigest()[:16]
        self.dictionary = dictionary
        self.segmenter = segmenter
        self.embed = embed
        self._stop_words = frozenset(normalise_text(w) for w in config.stop_words)
        self._attribute_names = dict(dictionary.attribute_names)
        known = set(dictionary.attribute_names.values())  # lists naming attributes this KB lacks do not apply
        for attribute, synonyms in config.attribute_synonyms.items():
            for synonym in synonyms:
                if attribute in known:
                    self._attribute_names.setdefault(normalise_text(synonym), attribute)
        self._question_words = {normalise_text(word): attribute for attribute, words in
                                config.attribute_questions.items() if attribute in known for word in words}
        self._attribute_index = NameIndex(self._attribute_names)
        self._question_index = NameIndex(self._question_words)
        self._aliases = AliasLinker(dictionary.aliases, pinyin_confidence=config.pinyin_confidence)
        self._fuzzy = (FuzzyLinker.build(dictionary.entity_names, config.pinyin_confidence,
                                         config.min_latin_similarity, dictionary.pinyin_keys)
                       if config.fuzzy_linking else None)
        self._intents = IntentClassifier(config.intent_rules, config.intent_examples, config.intent_rule_weight,
                                         config.intent_temperature, embed_many)
        self._attribute_ranker = AttributeRanker.build(
            set(dictionary.attribute_names.values()), config.attribute_synonyms,
            {a: (*config.attribute_examples.get(a, ()), *dictionary.learned_phrasings.get(a, ()))
             for a in {*config.attribute_examples, *dictionary.learned_phrasings}},
            dictionary.attribute_shapes, config.value_shape_questions, shape_weight=config.attribute_shape_weight,
            overlap_weight=config.attribute_overlap_weight, temperature=config.attribute_temperature,
            embed_many=embed_many if "embedding" in config.attribute_signals else None,
            stop_words=self._stop_words, use_overlap="overlap" in config.attribute_signals)
        self.link_model = LinkModel()
        stored = dictionary.link_model
        self.link_model = (LinkModel(tuple(stored["weights"]), stored["bias"], stored["fitted_on"])
                           if stored.get("fingerprint") == self._fingerprint else self._fit_link_model())
        self._categories = CategoryClassifier(dictionary.entity_categories, config.category_keywords,
                                              category_centroids or {}, config.category_prototype_weight,
                                              config.category_temperature)

    def parse(self, text: str) -> ParsedQuery:
        if not isinstance(text, str) or not text.strip():
            raise QueryError("query is empty")
        if len(text) > self.config.max_query_length:
            raise QueryError(f"query is {len(text)} characters long; the limit is {self.config.max_query_length} "
                             "(query_understanding.max_query_length)")
        normalised = normalise_text(text)
        if not normalised:
            raise QueryError("query has no searchable characters")
        tokens = tuple(self.segmenter.tokens(normalised))
        found = self._candidates(normalised, tokens)
        cased = _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()
        entities = self._weighed(found, cased if len(cased) == len(normalised) else normalised)
        attributes: Sequence[LinkedSpan] = found.attributes
        overview = 0.0 if attributes else 1.0  # a listed attribute word asks for it; a bare name, for the whole
        embedding_text = normalised[:self.config.max_embedding_chars]
        vector = self.embed(embedding_text) if self.embed else None
        named = [e for e in entities if e.confident]
        if named:
            possible = self._attributes_of(named)
            if possible:  # a listed word for an attribute the named entity cannot have is not what is asked
                attributes = tuple(a for a in attributes if a.name in possible)
            if not attributes:
                attributes, overview = self._ranked_attributes(normalised, found, named, possible)
        linked = self._with_tokens([self._stored_spelling(span, text) for span in entities])
        asked = self._with_tokens(attributes)
        intent, probability = self._intents.classify(normalised, tuple(e for e in linked if e.confident),
                                                     tuple(a for a in asked if a.confident), vector)
        categories, category_evidence = self._categories.classify(normalised, linked, vector)
        return ParsedQuery(
            original=text,
            normalised=normalised,
            tokens=tokens,
            content_tokens=self._content_tokens(tokens),
            entities=linked,
            attributes=asked,
            intent=intent,
            intent_probability=probability,
            categories=categories,
            category_evidence=category_evidence,
            embedding_text=embedding_text,
            overview=overview,
        )

    def _candidates(self, normalised: str, tokens: tuple[str, ...]) -> _Candidates:
        """Every name the text holds, by string: entity spans (exact, alias, by sound), lexicon attributes,
        stop words. Whether an entity span is meant is decided afterwards, from its evidence."""
        positions = _token_positions(normalised, tokens)
        entities = self.dictionary.name_index.longest_matches(normalised, self.config.min_entity_chars)
        if len(entities) > 1:  # "definition of grapevine": a name that is also an attribute's word asks for it
            entities = [e for e in entities if e.name not in self._attribute_names] or entities
        attributes = self._link_attributes(normalised, entities)
        stops = [LinkedSpan(t, t, (), start, end, 1.0) for t, (start, end) in zip(tokens, positions, strict=True)
                 if start >= 0 and t in self._stop_words]
        entities = self._with_aliases(entities, _masked(normalised, attributes + stops))
        if not entities and self._fuzzy:
            entities = self._fuzzy.link(_masked(normalised, attributes))
        if entities and not attributes:
            attributes = [replace(span, name=self._question_words[span.name]) for span in
                          self._question_index.longest_matches(_masked(normalised, entities), min_chars=1)]
        words = tuple(p for t, p in zip(tokens, positions, strict=True) if p[0] >= 0 and not is_punctuation(t))
        return _Candidates(tuple(entities), tuple(attributes), tuple(stops), words)

    def _weighed(self, found: _Candidates, cased: str) -> list[LinkedSpan]:
        """Each entity span with the probability that it is meant, and the evidence behind it."""
        context = SpanContext(found.positions, tuple((s.start, s.end) for s in found.stops),
                              tuple((a.start, a.end) for a in found.attributes),
                              sum(1 for ch in cased if not ch.isspace()), cased)
        weighed = []
        for span in found.entities:
            features = span_features(span, context, self.dictionary.ordinary_rate(span.name))
            weighed.append(replace(span, confidence=self.link_model.probability(features), evidence=features))
        return weighed

    def _attributes_of(self, entities: list[LinkedSpan]) -> set[str]:
        """The attributes the categories of these entities hold (empty for versions built before this was
        recorded: then any attribute may be asked)."""
        categories = {c for e in entities for spelling in self.dictionary.entity_names.get(e.name, ())
                      for c in self.dictionary.entity_categories.get(spelling, {})}
        return {a for c in categories for a in self.dictionary.category_attributes.get(c, ())}

    def _ranked_attributes(self, normalised: str, found: _Candidates, entities: list[LinkedSpan],
                           possible: set[str]) -> tuple[tuple[LinkedSpan, ...], float]:
        """The question part (outside the entity and stop words) ranked against the attributes the entity
        can have and against the overview, with the overview's probability; no attribute for a bare name,
        which the overview attributes answer. Value-shape phrases are looked for in the query without the
        entity but with its stop words, which they may contain (多少钱)."""
        rest = _masked(normalised, [*entities, *found.stops])
        pieces = [(m.start(), m.end()) for m in _QUESTION_PIECE.finditer(rest)]
        if not pieces:
            return (), 1.0
        question = " ".join(rest[start:end] for start, end in pieces)
        vector = self.embed(question) if self.embed else None
        start, end = pieces[0][0], pieces[-1][1]
        ranking = self._attribute_ranker.rank(question, vector, possible or None, _masked(normalised, entities))
        return tuple(LinkedSpan(question, ranked.name, (), start, end, ranked.probability,
                                {"overlap": ranked.overlap, "cosine": ranked.cosine})
                     for ranked in ranking.attributes), ranking.overview

    def _fit_link_model(self) -> LinkModel:
        """The entity-link model fitted on examples made from this KB's sampled records (the defaults for a
        KB too small or too uniform to teach it)."""
        if not self.config.fit_entity_links or not self.dictionary.samples:
            return LinkModel()
        words = {attribute: tuple(synonyms) for attribute, synonyms in self.config.attribute_synonyms.items()}
        examples = synthesise_examples(self.dictionary.samples, words, self._find_names)
        features: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for example in examples:
            if len(features[example.is_lookup]) >= MAX_EXAMPLES:
                continue
            normalised = normalise_text(example.text)
            found = self._candidates(normalised, tuple(self.segmenter.tokens(normalised)))
            target = normalise_text(example.entity)
            span = next((e for e in self._weighed(found, normalised) if e.name == target), None)
            if span is not None:
                features[example.is_lookup].append(span.evidence)
        return LinkModel.fit(features[True], features[False])

    def stored_link_model(self) -> dict:
        """The fitted link model as the dictionary stores it for later opens of the version."""
        model = self.link_model
        return {"fingerprint": self._fingerprint, "weights": list(model.weights), "bias": model.bias,
                "fitted_on": model.fitted_on}

    def _find_names(self, text: str) -> list[LinkedSpan]:
        return self.dictionary.name_index.longest_matches(normalise_text(text), self.config.min_entity_chars)

    def _content_tokens(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        """The tokens text clauses match: stop words out; a long query keeps its first `max_text_terms`
        distinct tokens, so a pasted paragraph costs the engine a bounded query."""
        content = tuple(t for t in tokens if t not in self._stop_words)
        if len(content) <= self.config.max_text_terms:
            return content
        return tuple(dict.fromkeys(content))[:self.config.max_text_terms]

    def entities_named_in(self, text: str) -> list[tuple[str, ...]]:
        """The stored spellings of each KB entity that `text` (a record's value) names, in order of mention."""
        return list(dict.fromkeys(tuple(self.dictionary.entity_names[span.name]) for span in self._find_names(text)))

    def _stored_spelling(self, span: LinkedSpan, text: str) -> LinkedSpan:
        """The stored spelling the user typed (traditional or simplified), else the first one stored."""
        as_typed = unicodedata.normalize("NFKC", text).lower()
        spellings = self.dictionary.entity_names[span.name]
        typed = next((s for s in spellings if s.lower() in as_typed), spellings[0])
        return replace(span, name=typed)

    def _with_tokens(self, spans: Iterable[LinkedSpan]) -> tuple[LinkedSpan, ...]:
        return tuple(replace(span, tokens=tuple(self.segmenter.tokens(span.name))) for span in spans)

    def _with_aliases(self, entities: list[LinkedSpan], text: str) -> list[LinkedSpan]:
        """An alias link is used when nothing linked, or in place of the shorter names inside it (渝北区 is
        another city's alias; 北区 a city's name)."""
        aliased = self._aliases.link(text)
        if not aliased:
            return entities
        alias = aliased[0]
        inside = [e for e in entities if e.start < alias.end and alias.start < e.end]
        if not entities or (inside and all(alias.start <= e.start and e.end <= alias.end and e.end - e.start <
                                           alias.end - alias.start for e in inside)):
            return sorted([alias, *(e for e in entities if e not in inside)], key=lambda e: e.start)
        return entities

    def _link_attributes(self, normalised: str, entities: list[LinkedSpan]) -> list[LinkedSpan]:
        """Attributes are searched outside entity spans, so 人口 inside an entity name is not an attribute."""
        return [replace(span, name=self._attribute_names[span.name])
                for span in self._attribute_index.longest_matches(_masked(normalised, entities), min_chars=1)]


@dataclass(frozen=True)
class _Candidates:
    entities: tuple[LinkedSpan, ...]
    attributes: tuple[LinkedSpan, ...]
    stops: tuple[LinkedSpan, ...]
    positions: tuple[tuple[int, int], ...]


def _token_positions(text: str, tokens: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, end) of each token in `text`, in order; (-1, -1) for one the segmenter changed."""
    positions, cursor = [], 0
    for token in tokens:
        start = text.find(token, cursor)
        if start < 0:
            positions.append((-1, -1))
            continue
        cursor = start + len(token)
        positions.append((start, cursor))
    return positions


def _masked(text: str, spans) -> str:
    """Text with the given spans blanked out, keeping every other character at its position."""
    characters = list(text)
    for span in spans:
        characters[span.start:span.end] = "\0" * (span.end - span.start)
    return "".join(characters)
