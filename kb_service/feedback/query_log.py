"""What users ask that the service understands poorly: a bounded, in-memory tally of recent queries with
no linked entity, no linked attribute, no results, or a low top score, for the console's insight view.
Analysts read it to find names and wordings to add to the KB or the synonym lists. Per process: with
several workers each keeps its own tally."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from kb_service.serving.service import SearchResponse

PROBLEMS = ("no entity", "no attribute", "no results", "low top score")


@dataclass
class QueryTally:
    searches: int = 0
    problems: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEMS, 0))
    top_score: float = 0.0


class QueryLog:
    """The last `capacity` distinct queries (normalised) with how often each had each problem."""

    def __init__(self, capacity: int = 10_000, low_score: float = 1.0):
        self.capacity = capacity
        self.low_score = low_score
        self._tallies: OrderedDict[str, QueryTally] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, response: SearchResponse) -> None:
        parsed = response.parsed
        top = response.hits[0].score if response.hits else 0.0
        seen = {"no entity": not parsed.confident_entities(), "no attribute": not parsed.confident_attributes(),
                "no results": not response.hits, "low top score": bool(response.hits) and top < self.low_score}
        with self._lock:
            tally = self._tallies.pop(parsed.normalised, None) or QueryTally()
            self._tallies[parsed.normalised] = tally
            tally.searches += 1
            tally.top_score = top
            for problem, happened in seen.items():
                tally.problems[problem] += happened
            while len(self._tallies) > self.capacity:
                self._tallies.popitem(last=False)

    def frequent(self, problem: str, limit: int = 20) -> list[tuple[str, QueryTally]]:
        """The queries that had `problem` most often, most frequent first."""
        with self._lock:
            having = [(q, t) for q, t in self._tallies.items() if t.problems[problem]]
        return sorted(having, key=lambda item: (-item[1].problems[problem], item[0]))[:limit]
