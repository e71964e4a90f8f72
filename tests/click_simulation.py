"""Synthetic users for learning-from-use tests and benchmarks: each session searches a question, is shown the
top ten, and clicks by a position-based model (a hit at rank k is examined with probability 1/k and, once
examined, clicked with probability 0.9 if it is the record the user wants, 0.05 otherwise)."""

from __future__ import annotations

import random

from kb_service.feedback.events import Action, SearchEvent
from scoring.planner import SearchRequest

WANTED, OTHER = 0.9, 0.05


def sessions(service, questions: list[tuple[str, str, str]], per_question: int, seed: int = 0) -> list[SearchEvent]:
    """Impressions and clicks of `per_question` sessions of every (text, wanted kid, entity) question."""
    rng = random.Random(seed)
    events = []
    for number, (text, wanted, _name) in enumerate(questions):
        hits = service.search(SearchRequest(query=text, size=10)).hits
        for session in range(per_question):
            query_id = f"sim-{seed}-{number}-{session}"
            for rank, hit in enumerate(hits, start=1):
                kid = hit.record.kid
                events.append(SearchEvent(query_id, text, kid, rank, Action.IMPRESSION, 0.0))
                if rng.random() < 1 / rank and rng.random() < (WANTED if kid == wanted else OTHER):
                    events.append(SearchEvent(query_id, text, kid, rank, Action.CLICK, 0.0))
    return events


def reciprocal_rank(service, questions: list[tuple[str, str, str]]) -> float:
    """MRR@10 of the wanted record over `questions`."""
    total = 0.0
    for text, wanted, _name in questions:
        hits = service.search(SearchRequest(query=text, size=10)).hits
        total += next((1 / rank for rank, hit in enumerate(hits, start=1) if hit.record.kid == wanted), 0.0)
    return total / len(questions)
