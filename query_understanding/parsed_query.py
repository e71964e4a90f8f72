"""The typed result of query understanding, handed to the scoring layer and shown by /understand."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

LINK_THRESHOLD = 0.5  # a link at least this probable counts as named: it makes a lookup and an answer


@dataclass(frozen=True)
class LinkedSpan:
    """A query span linked to a KB entity or attribute name, with the probability that the user means it and
    the evidence that decided it (feature name to value), which /understand and explain show."""

    text: str
    name: str
    tokens: tuple[str, ...]
    start: int
    end: int
    confidence: float
    evidence: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def confident(self) -> bool:
        return self.confidence >= LINK_THRESHOLD


@dataclass(frozen=True)
class ParsedQuery:
    original: str
    normalised: str
    tokens: tuple[str, ...]
    content_tokens: tuple[str, ...]
    entities: tuple[LinkedSpan, ...] = ()
    attributes: tuple[LinkedSpan, ...] = ()
    intent: str = "open_question"
    intent_probability: float = 1.0
    categories: dict[str, float] = field(default_factory=dict)
    # How much of `categories` rests on named evidence (confident entity links, category keywords) rather than
    # on the KB centroids alone: only a prediction so backed may restrict the hits.
    category_evidence: float = 0.0
    embedding_text: str = ""
    # The probability that the query asks about its entity as a whole rather than for an attribute: 1 for a
    # bare name, 0 when the lexicon names the attribute, the ranker's overview class otherwise.
    overview: float = 1.0

    def confident_entities(self) -> tuple[LinkedSpan, ...]:
        return tuple(span for span in self.entities if span.confident)

    def confident_attributes(self) -> tuple[LinkedSpan, ...]:
        return tuple(span for span in self.attributes if span.confident)

    def to_dict(self) -> dict:
        return asdict(self)
