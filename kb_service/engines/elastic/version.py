"""One version on a cluster (Elasticsearch or OpenSearch), served: executes search plans like the embedded
engine does.

`exact` sends the filtered bool query wrapped in a `script_score` (the formula compiled to painless).
`fast` asks for the text top-N and the approximate-knn top-N inside the same filters in one multi-search,
fills in the missing signal of each candidate with a second one restricted to their ids, and applies the
service's formula to the union: the same candidates and arithmetic as the embedded engine's fast mode.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import numpy as np

from kb_service.config import ElasticsearchConfig
from kb_service.engines.base import EngineResult
from kb_service.engines.elastic.dialect import Cluster, ClusterRequestError
from kb_service.engines.elastic.dsl import (
    SOURCE_EXCLUDES,
    clause_name,
    facet_counts,
    knn_filters,
    matching_aggregations,
    matching_query,
    render_bool,
    render_script_score,
    render_sort,
    script_params,
    vector_list,
)
from kb_service.engines.elastic.layout import from_source
from kb_service.records import KnowledgeRecord, epoch_seconds
from query_understanding.dictionary import KbDictionary
from scoring.candidate_scoring import formula_variables, nonzero_details, top_hits
from scoring.formula import Formula
from scoring.plan import Mode, SearchPlan, SortKey
from scoring.sorting import order_key, record_value


def _cosines_of(hits: list[dict]) -> dict[str, float]:
    """Cosines back from knn scores, which both engines report as (1 + cos) / 2 for cosine similarity."""
    return {hit["_id"]: 2.0 * hit["_score"] - 1.0 for hit in hits}


def _lookup(cosines: dict[str, float]) -> Callable[[list[str]], np.ndarray]:
    return lambda kids: np.array([cosines.get(kid, -1.0) for kid in kids])


class ClusterVersion:
    """One served index: its manifest and dictionary from the meta index, searches sent to the cluster."""

    def __init__(self, cluster: Cluster, name: str, meta: dict, settings: ElasticsearchConfig):
        self.cluster = cluster
        self.name = name
        self.settings = settings
        self.manifest = meta["manifest"]
        self.dictionary = KbDictionary.from_json(meta["dictionary"])
        centroids = meta["centroids"]
        self.category_centroids = {c: np.asarray(v, dtype=np.float32)
                                   for c, v in zip(centroids["categories"], centroids["vectors"], strict=True)}
        self.segmenter = self.dictionary.segmenter()

    @property
    def size(self) -> int:
        return int(self.manifest["records"])

    def get(self, kid: str) -> KnowledgeRecord | None:
        found = self.cluster.request("GET", f"/{self.name}/_doc/{quote(kid, safe='')}", ignore=(404,))
        return from_source(found["_source"]) if found and found.get("found") else None

    def formula_problem(self, formula: Formula) -> str | None:
        """Runs the formula's `script_score` on one document of the version: the node compiles the painless
        and executes it for real, so a script it refuses is found before any search needs it."""
        dims = int(self.manifest.get("dims") or 1)
        probe = np.zeros(dims, dtype=np.float32)
        probe[0] = 1.0
        script = {"source": formula.painless_source(self.cluster.dialect.painless_variables),
                  "params": script_params(formula, probe)}
        try:
            self.cluster.request("POST", f"/{self.name}/_search", {
                "size": 1, "terminate_after": 1, "_source": False,
                "query": {"script_score": {"query": {"match_all": {}}, "script": script}}})
        except ClusterRequestError as err:
            return f"{self.cluster.dialect.name} cannot run the formula's painless: {err}"
        return None

    def _search(self, body: dict) -> dict:
        return self.cluster.request("POST", f"/{self.name}/_search", body,
                                    params={"include_named_queries_score": True})

    def _knn(self, plan: SearchPlan, query_vector: np.ndarray, k: int, num_candidates: int,
             ids: list[str] | None = None) -> dict:
        return self.cluster.dialect.knn_search(vector_list(query_vector), k, num_candidates, knn_filters(plan, ids))

    def execute(self, plan: SearchPlan, query_vector: np.ndarray) -> EngineResult:
        if plan.sort is not None:
            return self._sorted(plan, plan.sort, query_vector)
        if plan.mode == Mode.EXACT:
            return self._exact(plan, query_vector)
        return self._fast(plan, query_vector)

    def _num_candidates(self, count: int) -> int:
        return min(10_000, int(count * self.settings.knn_num_candidates_factor))

    def _nearest(self, plan: SearchPlan, query_vector: np.ndarray) -> list[str]:
        """The ids of the knn top-N inside the filters: the vector half of the matching set."""
        count = plan.nearest
        response = self._search({**self._knn(plan, query_vector, count, self._num_candidates(count)), "size": count,
                                 "_source": False})
        return [hit["_id"] for hit in response["hits"]["hits"]]

    def request_for(self, plan: SearchPlan, query_vector: np.ndarray) -> dict | None:
        """exact: the script_score search; fast: the first round, the text and the knn searches."""
        if plan.mode == Mode.EXACT:
            return {"index": self.name, "search": self._exact_body(plan, query_vector)}
        count = plan.candidates
        num_candidates = self._num_candidates(count)
        return {"index": self.name, "msearch": [
            {"query": render_bool(plan, text_required=True), "size": count},
            {**self._knn(plan, query_vector, count, num_candidates), "size": count}]}

    def _exact_body(self, plan: SearchPlan, query_vector: np.ndarray, nearest: list[str] | None = None) -> dict:
        """The script_score search; with the knn ids, also the matching set's count and facets."""
        query = render_script_score(plan, query_vector, self.cluster.dialect.painless_variables)
        body = {"query": query, "size": plan.window, "_source": SOURCE_EXCLUDES, "track_total_hits": False}
        if nearest is not None:
            body["aggs"] = matching_aggregations(plan, nearest)
        return body

    def _exact(self, plan: SearchPlan, query_vector: np.ndarray) -> EngineResult:
        return self._scored(plan, query_vector,
                            self._search(self._exact_body(plan, query_vector, self._nearest(plan, query_vector))))

    def _sorted(self, plan: SearchPlan, sort: SortKey, query_vector: np.ndarray) -> EngineResult:
        """A field sort over the matching set: the engine orders by the field (ties by text score) and the
        formula then orders equal values, as the embedded engine does; no script is needed."""
        nearest = self._nearest(plan, query_vector)
        return self._scored(plan, query_vector, self._search({
            "query": render_bool(plan, text_required=False, restrict=matching_query(plan, nearest)),
            "sort": render_sort(sort), "track_scores": True, "size": plan.window, "_source": SOURCE_EXCLUDES,
            "track_total_hits": False, "aggs": matching_aggregations(plan, nearest)}))

    def _scored(self, plan: SearchPlan, query_vector: np.ndarray, response: dict) -> EngineResult:
        """An answer's hits through the formula (cosines fetched for them), with its matching aggregation."""
        hits = response["hits"]["hits"]
        candidates = _Candidates.from_hits(hits)
        cosines = self._cosines(plan, query_vector, list(candidates.sources)) if plan.formula.needs("cosine") else {}
        matching = response["aggregations"]["matching"]
        return EngineResult(candidates.scored(plan, _lookup(cosines)), int(matching["doc_count"]),
                            facet_counts(plan, matching))

    def _fast(self, plan: SearchPlan, query_vector: np.ndarray) -> EngineResult:
        count = plan.candidates
        has_text = bool(plan.should or plan.required_any)
        searches = [{**self._knn(plan, query_vector, count, self._num_candidates(count)), "size": count,
                     "_source": SOURCE_EXCLUDES}]
        if has_text:
            searches.append({"query": render_bool(plan, text_required=True), "size": count,
                             "_source": SOURCE_EXCLUDES, "track_total_hits": False})
        knn_response, *text_response = self._msearch(searches)
        candidates = _Candidates.from_hits(text_response[0]["hits"]["hits"] if text_response else [])
        cosines = _cosines_of(knn_response["hits"]["hits"])
        vector_only = [hit for hit in knn_response["hits"]["hits"] if hit["_id"] not in candidates.sources]
        text_only = [kid for kid in candidates.sources if kid not in cosines]
        candidates.add_sources(vector_only)
        nearest = [hit["_id"] for hit in knn_response["hits"]["hits"][:plan.nearest]]
        follow_up = [{"query": {"bool": {"filter": knn_filters(plan)}}, "size": 0, "track_total_hits": False,
                      "aggs": matching_aggregations(plan, nearest)}]
        if has_text and vector_only:
            follow_up.append({"query": render_bool(plan, text_required=False, ids=[h["_id"] for h in vector_only]),
                              "size": len(vector_only), "_source": False})
        if text_only and plan.formula.needs("cosine"):
            follow_up.append({**self._knn(plan, query_vector, len(text_only), len(text_only), ids=text_only),
                              "size": len(text_only), "_source": False})
        responses = self._msearch(follow_up)
        matching = responses.pop(0)["aggregations"]["matching"]
        if has_text and vector_only:
            candidates.add_text_scores(responses.pop(0)["hits"]["hits"])
        if responses:
            cosines.update(_cosines_of(responses[0]["hits"]["hits"]))
        return EngineResult(candidates.scored(plan, _lookup(cosines)), int(matching["doc_count"]),
                            facet_counts(plan, matching))

    def _msearch(self, searches: list[dict]) -> list[dict]:
        return self.cluster.msearch(self.name, searches, params={"include_named_queries_score": True})

    def _cosines(self, plan: SearchPlan, query_vector: np.ndarray, kids: list[str]) -> dict[str, float]:
        if not kids:
            return {}
        response = self._search({**self._knn(plan, query_vector, len(kids), len(kids), ids=kids),
                                 "size": len(kids), "_source": False})
        return _cosines_of(response["hits"]["hits"])


class _Candidates:
    """Candidates of one search by kid: their records, BM25 `_score` and per-clause scores."""

    def __init__(self) -> None:
        self.sources: dict[str, dict] = {}
        self.text_score: dict[str, float] = {}
        self.clauses: dict[str, dict[str, float]] = {}

    @classmethod
    def from_hits(cls, hits: list[dict]) -> _Candidates:
        candidates = cls()
        candidates.add_sources(hits)
        candidates.add_text_scores(hits)
        return candidates

    def add_sources(self, hits: list[dict]) -> None:
        for hit in hits:
            self.sources.setdefault(hit["_id"], hit["_source"])

    def add_text_scores(self, hits: list[dict]) -> None:
        for hit in hits:
            by_clause: dict[str, float] = {}
            for named, score in (hit.get("matched_queries") or {}).items():
                by_clause[clause_name(named)] = by_clause.get(clause_name(named), 0.0) + score
            self.clauses[hit["_id"]] = by_clause
            self.text_score[hit["_id"]] = sum(by_clause.values())

    def scored(self, plan: SearchPlan, cosines_of: Callable[[list[str]], np.ndarray]) -> list:
        kids = list(self.sources)
        if not kids:
            return []
        records = [from_source(self.sources[k]) for k in kids]
        confidence = np.array([np.nan if r.confidence is None else r.confidence for r in records])
        variables = formula_variables(
            plan.formula, np.array([self.text_score.get(k, 0.0) for k in kids]), cosine=lambda: cosines_of(kids),
            confidence=confidence, updated_epoch=lambda: np.array([epoch_seconds(r.update_timestamp) for r in records]))
        tie_break = np.argsort(np.argsort(kids))
        order = None if plan.sort is None else order_key([record_value(r, plan.sort.field) for r in records],
                                                         plan.sort.descending)
        return top_hits(plan.formula, variables, plan.window, tie_break, record_at=lambda position: records[position],
                        details_of=lambda positions: [nonzero_details(
                            self.text_score.get(kids[position], 0.0),
                            sorted(self.clauses.get(kids[position], {}).items())) for position in positions.tolist()],
                        order=order)
