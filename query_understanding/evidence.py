"""Entity links as calibrated probabilities: a logistic model over the evidence for each linked span, fitted
on queries synthesised from the KB itself when a version is opened.

A name found in the query is not yet a lookup: in a sentence-long definition every common word is some
entity's name. What tells the two apart is the evidence around the span: how much of the query it covers,
how many other words are left over once an attribute and stop words are accounted for, how often the name
occurs as an ordinary word inside the KB's own values, how it was found (exact, alias, by sound), whether
it starts and ends where the segmenter's words do, and whether the user marked it (quotes, capitals).

The model's examples come from the KB being served, so a KB of another language or shape gets its own
boundary: positives are entity names with an attribute name or a short piece of other text beside them (a
question in words no list holds), negatives are record values that mention another entity's name in passing.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from query_understanding.parsed_query import LinkedSpan

FEATURES = ("coverage", "leftover_words", "attribute_linked", "log_ordinary_rate", "prior", "marked", "aligned")
# Used when a KB offers too few examples to fit: a span that is most of the query, on word boundaries, with
# an attribute and at most a word or two left over, links; one word of a sentence does not, nor a sound-alike
# across two words (哪个城市 holds 个城, which sounds like the city 葛城).
DEFAULT_WEIGHTS = (3.0, -0.6, 1.5, -0.2, 2.0, 1.0, 3.0)
DEFAULT_BIAS = -4.0
MIN_EXAMPLES = 40  # of each class, to fit rather than use the defaults
MAX_EXAMPLES = 1500  # of each class: enough for six weights, and fitted in milliseconds
_MARKS = re.compile(r"[\"'“”‘’「」『』《》]")


@dataclass(frozen=True)
class SpanContext:
    """What the evidence for one span is read from: the parse's spans and the query as typed."""

    tokens: tuple[tuple[int, int], ...]  # (start, end) of every segmenter token in the normalised text
    stop_spans: tuple[tuple[int, int], ...]
    attribute_spans: tuple[tuple[int, int], ...]
    content_chars: int
    as_typed: str


def span_features(span: LinkedSpan, context: SpanContext, ordinary_rate: float) -> dict[str, float]:
    """The evidence for one entity span, by the names in FEATURES (the model reads them in that order)."""
    covered = [(span.start, span.end), *context.attribute_spans, *context.stop_spans]
    leftover = sum(1 for start, end in context.tokens
                   if not any(start < c_end and c_start < end for c_start, c_end in covered))
    typed_name = context.as_typed[span.start:span.end] if len(context.as_typed) >= span.end else ""
    marked = bool(_MARKS.search(context.as_typed[max(0, span.start - 1):span.end + 1])) or (
        span.start > 0 and typed_name[:1].isupper())
    return {
        "coverage": round((span.end - span.start) / max(context.content_chars, 1), 4),
        "leftover_words": float(leftover),
        "attribute_linked": float(bool(context.attribute_spans)),
        "log_ordinary_rate": round(math.log(ordinary_rate), 4),
        "prior": span.confidence,
        "marked": float(marked),
        "aligned": float(any(start == span.start for start, _ in context.tokens)
                         and any(end == span.end for _, end in context.tokens)),
    }


@dataclass(frozen=True)
class LinkModel:
    """P(the user means this entity | evidence) = sigmoid(weights · features + bias)."""

    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    bias: float = DEFAULT_BIAS
    fitted_on: int = 0  # examples the weights were fitted on; 0 = the defaults

    def probability(self, features: dict[str, float]) -> float:
        z = self.bias + sum(w * features[name] for w, name in zip(self.weights, FEATURES, strict=True))
        return round(1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))), 4)

    @classmethod
    def fit(cls, positives: Sequence[dict[str, float]], negatives: Sequence[dict[str, float]],
            l2: float = 1.0) -> LinkModel:
        """L2-regularised logistic regression by Newton's method; the defaults when either class is thin."""
        if min(len(positives), len(negatives)) < MIN_EXAMPLES:
            return cls()
        rows = [[f[name] for name in FEATURES] for f in (*positives, *negatives)]
        x = np.hstack([np.asarray(rows, dtype=np.float64), np.ones((len(rows), 1))])
        y = np.array([1.0] * len(positives) + [0.0] * len(negatives))
        sample_weight = np.where(y == 1.0, len(y) / (2 * len(positives)), len(y) / (2 * len(negatives)))
        penalty = np.eye(x.shape[1]) * l2
        penalty[-1, -1] = 0.0
        beta = np.zeros(x.shape[1])
        for _ in range(25):
            p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
            gradient = x.T @ (sample_weight * (p - y)) + penalty @ beta
            hessian = (x * (sample_weight * p * (1 - p))[:, None]).T @ x + penalty
            step = np.linalg.solve(hessian, gradient)
            beta -= step
            if np.abs(step).max() < 1e-6:
                break
        return cls(tuple(round(float(b), 4) for b in beta[:-1]), round(float(beta[-1]), 4), len(y))


@dataclass(frozen=True)
class Example:
    """One synthetic query and the entity it would name if it were a lookup."""

    text: str
    entity: str
    is_lookup: bool


def synthesise_examples(samples: Iterable[tuple[str, str, str]], attribute_words: dict[str, tuple[str, ...]],
                        find_names: Callable[[str], list[LinkedSpan]], seed: int = 13) -> list[Example]:
    """Lookups and mentions made from sampled (entity, attribute, value) records of the KB.

    A lookup is an entity name alone, with one of its attribute's words, or with a short piece (one to four
    words) of some other record's value standing in for a question in words no list holds, on either side.
    A mention is a record value longer than the name it contains, that name being another entity's."""
    rng = random.Random(seed)
    samples = list(samples)
    pieces = [_short_piece(value, rng) for _, _, value in samples]
    pieces = [p for p in pieces if p]
    examples: list[Example] = []
    for entity, attribute, value in samples:
        if not entity:
            continue
        words = (attribute, *attribute_words.get(attribute, ()))
        choice = rng.random()
        other = rng.choice(words) if choice < 0.45 else (rng.choice(pieces) if pieces and choice < 0.85 else "")
        glue = " " if (entity[-1:].isascii() or other[:1].isascii()) else ""
        text = f"{entity}{glue}{other}" if rng.random() < 0.6 else f"{other}{glue}{entity}"
        examples.append(Example(text.strip(), entity, True))
        for span in find_names(value):
            if span.name != entity and span.end - span.start < len(value.strip()):
                examples.append(Example(value, span.name, False))
                break
    return examples


def _short_piece(value: str, rng: random.Random) -> str:
    """One to four words of a value (two to eight characters of unspaced text): as long as a question
    part runs (这个成语从哪来的 is six words)."""
    words = value.split()
    if len(words) > 1:
        start = rng.randrange(len(words))
        return " ".join(words[start:start + rng.randint(1, 4)])
    if len(value) > 2:
        start = rng.randrange(len(value) - 1)
        return value[start:start + rng.randint(2, 8)]
    return ""
