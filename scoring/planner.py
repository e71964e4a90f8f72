"""Builds the search plan from a parsed query and the scoring config: filters, category and text clauses,
the formula for the query's intent."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from query_understanding import ParsedQuery
from query_understanding.classifiers import INTENTS
from scoring.answer_expansion import AnswerExpansion
from scoring.formula import ConfidenceTerm, CosineTerm, Formula, TextScoreTerm
from scoring.formula_checks import check_formula
from scoring.plan import (
    TIMESTAMP_FORMAT,
    Clause,
    Filter,
    Mode,
    NotExpiredFilter,
    SearchPlan,
    SortKey,
    TermFilter,
    filtered_fields,
)
from scoring.rescoring import ConfidenceBoost, RescoringStrategy

FORMULA_POLICIES = ("refuse", "warn")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClauseBoosts:
    """Per-clause boosts: an exact keyword hit outweighs a token match (defaults 10/5/5/30/15/10, see
    docs/design.md)."""

    knowledge_phrase: float = 10.0
    attribute_match: float = 5.0
    value_match: float = 5.0
    knowledge_term: float = 30.0
    attribute_term: float = 15.0
    value_term: float = 10.0


@dataclass(frozen=True)
class ScoringConfig:
    boosts: ClauseBoosts = field(default_factory=ClauseBoosts)
    category_boost: float = 1.0
    category_min_weight: float = 0.2
    category_required_mass: float = 0.5  # predicted categories restrict the hits only when this sure, else boost
    category_required_evidence: float = 0.5  # … and only when named evidence backs them (ParsedQuery)
    mode: Mode = Mode.EXACT
    candidates: int = 200
    rescore_window: int = 100
    formula: Formula = field(default_factory=lambda: Formula(
        (CosineTerm(weight=1.0), TextScoreTerm(weight=1.0), ConfidenceTerm(weight=0.1))))
    rescoring: tuple[RescoringStrategy, ...] = (ConfidenceBoost(),)
    formula_check: str = "refuse"
    intent_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    answer_expansion: AnswerExpansion = field(default_factory=AnswerExpansion)
    _formula_by_intent: dict[str, Formula] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self):
        if self.candidates < 1 or self.rescore_window < 1:
            raise ValueError("candidates and rescore_window must be >= 1")
        if self.formula_check not in FORMULA_POLICIES:
            raise ValueError(f"formula_check must be one of {', '.join(FORMULA_POLICIES)}")
        unknown = set(self.intent_weights) - set(INTENTS)
        if unknown:
            raise ValueError(f"intent_weights names unknown intent(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(INTENTS)}")
        try:
            by_intent = {i: self.formula.with_weights(w) for i, w in self.intent_weights.items() if w}
        except ValueError as err:
            raise ValueError(f"intent_weights: {err}") from None
        object.__setattr__(self, "_formula_by_intent", by_intent)  # derived once: the dataclass is frozen
        for intent, formula in [("", self.formula), *by_intent.items()]:
            problems = check_formula(formula)
            where = f" (weights for intent {intent})" if intent else ""
            if problems and self.formula_check == "refuse":
                raise ValueError("formula " + "; ".join(map(str, problems)) + where +
                                 " (set scoring.formula_check: warn to serve it anyway)")
            for problem in problems:
                log.warning("formula %s%s", problem, where)

    def formulas(self) -> dict[str, Formula]:
        """Every formula a plan can carry, by where the config states it (`formula`, or an intent's weights)."""
        return {"formula": self.formula, **{f"intent_weights.{i}": f for i, f in self._formula_by_intent.items()}}

    def formula_for(self, intent: str) -> Formula:
        """The formula with this intent's term weights (text counts for less when nothing was linked)."""
        return self._formula_by_intent.get(intent, self.formula)


@dataclass(frozen=True)
class SearchRequest:
    query: str
    size: int = 10
    offset: int = 0
    categories: tuple[str, ...] = ()
    explain: bool = False
    mode: Mode | None = None
    filters: tuple[Filter, ...] = ()
    sort: SortKey | None = None
    facets: tuple[str, ...] = ()
    facet_size: int = 10


BASE_FILTERS = (TermFilter("del", (0,)), TermFilter("available", (1,)))


def build_plan(parsed: ParsedQuery, request: SearchRequest, config: ScoringConfig, now: str | None = None
               ) -> SearchPlan:
    boosts = config.boosts
    content = " ".join(parsed.content_tokens) or " ".join(parsed.tokens)
    should: list[Clause] = []
    for entity in parsed.entities:  # a name's clauses count as much as it is likely to be meant
        should.append(Clause("knowledge_phrase", "match_phrase", "knowledge_phrase", " ".join(entity.tokens),
                             boosts.knowledge_phrase * entity.confidence))
        should.append(Clause("knowledge_term", "term", "knowledge", entity.name,
                             boosts.knowledge_term * entity.confidence))
    if not parsed.confident_entities() and content:
        should.append(Clause("knowledge_phrase", "match_phrase", "knowledge_phrase", content,
                             boosts.knowledge_phrase))
    should.extend(Clause("attribute_term", "term", "attribute", a.name, boosts.attribute_term * a.confidence)
                  for a in parsed.attributes)
    if content:
        should.append(Clause("attribute_match", "match", "attribute_phrase", content, boosts.attribute_match))
        should.append(Clause("value_match", "match", "value_phrase", content, boosts.value_match))
    should.append(Clause("value_term", "term", "value", parsed.original.strip(), boosts.value_term))

    filters: list = [*BASE_FILTERS, NotExpiredFilter(now or time.strftime(TIMESTAMP_FORMAT))]
    if request.categories:
        filters.append(TermFilter("category", tuple(request.categories)))
    filters.extend(request.filters)
    chosen = bool(request.categories) or "category" in filtered_fields(request.filters)
    predicted = [(category, weight) for category, weight in parsed.categories.items()
                 if weight >= config.category_min_weight and not chosen]
    category_clauses = tuple(Clause("category", "term", "category", category, weight * config.category_boost)
                             for category, weight in predicted)
    # A likely prediction backed by a named entity or keyword (城市 0.85 for 杭州的人口) may restrict the hits;
    # an unlikely one (noun.plant 0.27 of a glossary's 45 categories), or one resting on the KB centroids alone
    # (right for 43 % of the glossary's definition queries), only boosts, so a wrong guess cannot hide the answer.
    required_any = (category_clauses if sum(w for _, w in predicted) >= config.category_required_mass
                    and parsed.category_evidence >= config.category_required_evidence else ())
    if not required_any:
        should.extend(category_clauses)
    return SearchPlan(
        filters=tuple(filters),
        required_any=required_any,
        should=tuple(should),
        vector_text=parsed.embedding_text,
        formula=config.formula_for(parsed.intent),
        mode=Mode(request.mode or config.mode),
        size=request.size,
        offset=request.offset,
        candidates=max(config.candidates, request.offset + request.size),
        window=max(config.rescore_window, request.offset + request.size),
        nearest=config.candidates,
        sort=request.sort,
        facets=request.facets,
        facet_size=request.facet_size,
    )
