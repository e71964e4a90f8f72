"""Graded judgments from clicks with a position-based click model (PBM), fitted by expectation-maximisation.

A click needs the hit to be examined and found attractive: P(click | query, kid, rank k) = θ_k · γ(query, kid).
Users examine the top ranks more (θ falls with k), so raw click-through rates favour whatever was shown
first; PBM separates the two, and γ, the attractiveness at full attention, ranks hits by relevance free of
the position bias. Hits need to have been shown at several positions for θ and γ to separate; pairs shown
fewer than `min_impressions` times give no judgment (too little evidence).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from kb_service.feedback.events import Action, SearchEvent
from query_understanding.normalise import normalise_text

# γ relative to the query's most attractive hit, at or above each: grade 1, 2, 3 (below the first: 0). Relative,
# because PBM fixes γ only up to a scale shared with θ: the order within a query is what the clicks tell.
GRADE_THRESHOLDS = (0.1, 0.25, 0.5)


@dataclass(frozen=True)
class Judgment:
    query: str
    kid: str
    grade: int
    attractiveness: float
    impressions: int
    clicks: int


def fit_pbm(observations: list[tuple[str, str, int, bool]], iterations: int = 100
            ) -> tuple[dict[int, float], dict[tuple[str, str], float]]:
    """θ by rank and γ by (query, kid) from (query, kid, rank, clicked) observations; θ at rank 1 is 1."""
    theta: dict[int, float] = defaultdict(lambda: 0.5)
    gamma: dict[tuple[str, str], float] = defaultdict(lambda: 0.5)
    for _ in range(iterations):
        theta_sum: dict[int, float] = defaultdict(float)
        theta_n: dict[int, int] = defaultdict(int)
        gamma_sum: dict[tuple[str, str], float] = defaultdict(float)
        gamma_n: dict[tuple[str, str], int] = defaultdict(int)
        for query, kid, rank, clicked in observations:
            t, g = theta[rank], gamma[query, kid]
            if clicked:
                examined = attractive = 1.0
            else:
                missed = max(1.0 - t * g, 1e-12)
                examined = t * (1.0 - g) / missed
                attractive = (1.0 - t) * g / missed
            theta_sum[rank] += examined
            theta_n[rank] += 1
            gamma_sum[query, kid] += attractive
            gamma_n[query, kid] += 1
        theta = defaultdict(lambda: 0.5, {k: theta_sum[k] / theta_n[k] for k in theta_n})
        gamma = defaultdict(lambda: 0.5, {p: gamma_sum[p] / gamma_n[p] for p in gamma_n})
    top = theta.get(1) or max(theta.values(), default=1.0) or 1.0
    return ({k: v / top for k, v in theta.items()},
            {pair: min(1.0, value * top) for pair, value in gamma.items()})


def judgments_from_events(events: list[SearchEvent], min_impressions: int = 10) -> list[Judgment]:
    """One judgment per (query, kid) shown at least `min_impressions` times, graded from its PBM γ."""
    query_of: dict[str, str] = {}
    shown: dict[tuple[str, str], int] = {}
    clicked: set[tuple[str, str]] = set()
    for event in events:
        if event.query.strip():
            query_of.setdefault(event.query_id, normalise_text(event.query))
        if event.action == Action.IMPRESSION:
            shown[event.query_id, event.kid] = event.position
        else:
            clicked.add((event.query_id, event.kid))
    observations = [(query_of[qid], kid, rank, (qid, kid) in clicked)
                    for (qid, kid), rank in shown.items() if qid in query_of]
    _, gamma = fit_pbm(observations)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for query, kid, _, was_clicked in observations:
        counts[query, kid][0] += 1
        counts[query, kid][1] += was_clicked
    best: dict[str, float] = defaultdict(float)
    for (query, _), value in gamma.items():
        best[query] = max(best[query], value)
    judgments = []
    for (query, kid), (impressions, clicks) in sorted(counts.items()):
        if impressions >= min_impressions:
            relative = gamma[query, kid] / best[query] if best[query] else 0.0
            grade = sum(relative >= threshold for threshold in GRADE_THRESHOLDS)
            judgments.append(Judgment(query, kid, grade, round(gamma[query, kid], 4), impressions, clicks))
    return judgments
