"""Relevance on the shared geo KB (75k records, full load with the real encoder): slow, run by CI."""

import pytest

from kb_service.evaluation import evaluate, read_qrels, read_queries
from kb_service.loading import load_files
from kb_service.service import SearchService
from scoring.planner import SearchRequest
from tests.conftest import make_config, shared_file

# Baselines from shared/data/BASELINES.md (best naive system per task, nDCG@10 / MRR@10).
BEST_BASELINE_MRR = {"geo-attr": 0.906}
BEST_BASELINE_NDCG = {"geo-attr": 0.844, "geo-alias": 0.337, "country-capital": 0.653}


@pytest.mark.slow
def test_geo_dev_queries_beat_the_naive_baselines(tmp_path):
    kb = shared_file("geo", "kb.jsonl.gz")
    queries = read_queries(shared_file("geo", "queries.dev.jsonl"))
    qrels = read_qrels(shared_file("geo", "qrels.dev.tsv"))
    config = make_config(tmp_path / "data")
    report = load_files(config, [str(kb)])
    assert report.records == 74_648
    service = SearchService(config)
    scores, _ = evaluate(queries, qrels, lambda text: [
        h.record.kid for h in service.search(SearchRequest(query=text, size=100)).hits])
    by_task = {s.task: s for s in scores}
    for task in scores:
        print(f"{task.task}: nDCG@10 {task.ndcg10:.3f} MRR@10 {task.mrr10:.3f} R@100 {task.recall100:.3f}")
    assert by_task["geo-attr"].mrr10 > BEST_BASELINE_MRR["geo-attr"]
    for task, baseline in BEST_BASELINE_NDCG.items():
        assert by_task[task].ndcg10 > baseline, task
