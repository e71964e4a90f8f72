"""What every relevance figure rests on, checked against numbers worked out by hand: Lucene's BM25 on three
documents, phrase matching, the default formula on chosen inputs, and the metrics on tiny rankings."""


import numpy as np
import pytest

from kb_service.engines.embedded.columns import KeywordColumn
from kb_service.engines.embedded.text_index import FieldTextIndex
from kb_service.evaluation import EvalQuery, evaluate, format_table, measure_rankings, p_value
from scoring.numpy_functions import NUMPY_FUNCTIONS
from tests.conftest import make_config

# Three documents over two terms (c occurs once), k1 = 1.2, b = 0.75:
#   d0 = "a b" (length 2), d1 = "a a c" (length 3), d2 = "b" (length 1); N = 3, avgdl = 6 / 3 = 2.
# Lucene: idf = ln(1 + (N - df + 0.5) / (df + 0.5)); a and b both have df = 2: idf = ln(1.6) = 0.4700036.
# score = idf · tf / (tf + k1 · (1 - b + b · dl / avgdl)):
#   a in d0: tf 1, dl 2, norm 1.000 → 0.4700036 · 1 / 2.20  = 0.2136380
#   a in d1: tf 2, dl 3, norm 1.375 → 0.4700036 · 2 / 3.65  = 0.2575362
#   b in d0: tf 1, dl 2, norm 1.000 → 0.2136380
#   b in d2: tf 1, dl 1, norm 0.625 → 0.4700036 · 1 / 1.75  = 0.2685735
DOCUMENTS = ["a b", "a a c", "b"]


@pytest.fixture(scope="module")
def text_index():
    return FieldTextIndex.build(DOCUMENTS, k1=1.2, b=0.75)


def test_bm25_postings_hold_lucenes_scores(text_index):
    a = text_index.term_postings("a")
    b = text_index.term_postings("b")
    assert a.docs.tolist() == [0, 1] and b.docs.tolist() == [0, 2]
    assert a.scores == pytest.approx([0.2136380, 0.2575362], abs=1e-6)
    assert b.scores == pytest.approx([0.2136380, 0.2685735], abs=1e-6)
    assert text_index.term_postings("zzz").docs.size == 0


def test_a_match_is_the_sum_of_its_terms(text_index):
    parts = text_index.match_postings(["a", "b"])
    total = sum(part.scores_of(np.arange(3)) for part in parts)
    assert total == pytest.approx([0.2136380 * 2, 0.2575362, 0.2685735], abs=1e-6)


def test_a_phrase_matches_contiguous_tokens_in_order_only(text_index):
    phrase = text_index.phrase_postings(["a", "b"])
    assert phrase.docs.tolist() == [0] and phrase.scores == pytest.approx([0.2136380 * 2], abs=1e-6)
    assert text_index.phrase_postings(["b", "a"]).docs.size == 0
    assert text_index.phrase_postings(["a", "c"]).docs.tolist() == [1]


def test_a_keyword_term_scores_without_length_norms():
    """Keyword fields have norms off: tf / (tf + k1) with tf = 1. 杭州 in 1 of 3 documents: idf = ln(1 + 2.5 / 1.5)
    = 0.9808293, score = 0.9808293 / 2.2 = 0.4458315."""
    column = KeywordColumn.build(["杭州", "上海", "上海"])
    postings = column.term_postings("杭州", k1=1.2)
    assert postings.docs.tolist() == [0] and postings.scores == pytest.approx([0.4458315], abs=1e-6)
    assert column.matches(["上海", "北京"]).tolist() == [False, True, True]


def test_the_default_formula_on_chosen_inputs():
    """config.yaml: 0.3 · (cos + 1) / 2 + s / (s + 132) + 0.1 · ln(1 + confidence), null confidence 0.5.
    cos 0.6, s 132, confidence null → 0.3 · 0.8 + 0.5 + 0.1 · ln 1.5 = 0.24 + 0.5 + 0.0405465 = 0.7805465;
    cos -1, s 0, confidence 1 → 0 + 0 + 0.1 · ln 2 = 0.0693147."""
    formula = make_config(".", share_cache=False).scoring.formula
    variables = {"cosine": np.array([0.6, -1.0]), "text_score": np.array([132.0, 0.0]),
                 "confidence": np.array([formula.null_confidence, 1.0])}
    terms = formula.evaluate_terms(variables, NUMPY_FUNCTIONS)
    total = sum(weight * raw for weight, raw in terms.values())
    assert formula.null_confidence == 0.5
    assert total == pytest.approx([0.7805465, 0.0693147], abs=1e-6)


GRADES = {"y": 2, "z": 1}


def _measured(ranked: list[str], grades: dict[str, int] = GRADES) -> dict[str, float]:
    return measure_rankings({"q": ranked}, {"q": grades}).get("q", {})


def test_ndcg_at_10_uses_trec_evals_linear_gains():
    """x, y, z with y graded 2 and z graded 1: DCG = 2 / log2 3 + 1 / log2 4 = 1.2618595 + 0.5 = 1.7618595;
    ideal y, z: 2 / 1 + 1 / log2 3 = 2.6309298; nDCG = 0.6696718 (2^g - 1 gains would give 0.6590018)."""
    assert _measured(["x", "y", "z"])["nDCG@10"] == pytest.approx(0.6696718, abs=1e-6)
    assert _measured(["y", "z", "x"])["nDCG@10"] == pytest.approx(1.0)
    assert _measured([f"n{i}" for i in range(10)] + ["y"])["nDCG@10"] == 0.0  # rank 11 is past the cut-off
    assert _measured([])["nDCG@10"] == 0.0  # a judged query with no hits scores 0
    assert _measured(["x"], {}) == {}  # an unjudged query is not measured


def test_the_ranking_order_is_kept_whatever_the_record_ids():
    """trec_eval breaks score ties by document id; the ranking is passed as strictly decreasing scores."""
    assert _measured(["a", "y"], {"y": 2})["MRR@10"] == 0.5
    assert _measured(["z9", "y", "a"], {"a": 2})["MRR@10"] == pytest.approx(1 / 3)


def test_mrr_at_10_counts_only_exact_records():
    assert _measured(["x", "z", "y"])["MRR@10"] == pytest.approx(1 / 3)  # z is graded 1, not an exact answer
    assert _measured(["z", "x"])["MRR@10"] == 0.0
    assert _measured([f"n{i}" for i in range(10)] + ["y"])["MRR@10"] == 0.0


def test_recall_at_k():
    assert _measured(["x", "y"])["R@10"] == 0.5
    assert _measured(["z", "x", "y"])["R@10"] == 1.0
    assert _measured(["z"] + [f"n{i}" for i in range(10)] + ["y"]) == pytest.approx(
        {"nDCG@10": 1 / 2.6309298, "MRR@10": 0.0, "R@10": 0.5, "R@100": 1.0}, abs=1e-6)


def test_a_paired_test_tells_a_consistent_gain_from_noise():
    """Twenty queries: a config that lifts the exact record from rank 2 to 1 on all of them differs
    significantly; one that swaps it on a single query does not; identical runs give p = 1."""
    queries = [EvalQuery(f"q{i}", "t", f"q{i}") for i in range(20)]
    qrels = {f"q{i}": {f"right{i}": 2} for i in range(20)}
    second = evaluate(queries, qrels, lambda q: ["wrong", "right" + q[1:]], "second")
    first = evaluate(queries, qrels, lambda q: ["right" + q[1:], "wrong"], "first")
    one = evaluate(queries, qrels, lambda q: ["right" + q[1:], "wrong"] if q == "q3" else ["wrong", "right" + q[1:]])
    assert p_value(second, first, "t", "MRR@10") < 0.001
    assert p_value(second, one, "t", "MRR@10") > 0.3
    assert p_value(second, second, "t", "MRR@10") == 1.0
    table = format_table([second, first])
    assert "| t (n=20) | MRR@10 | 0.500 | 1.000 (p=0.0002*) |" in table, table
