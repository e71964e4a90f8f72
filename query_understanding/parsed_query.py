"""The typed result of query understanding, handed to the scoring layer and shown by /understand."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class LinkedSpan:
    """A query span linked to a KB entity or attribute name, with how sure the link is."""

    text: str
    name: str
    tokens: tuple[str, ...]
    start: int
    end: int
    confidence: float


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
    embedding_text: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
