"""What every relevance figure rests on, checked against numbers worked out by hand: Lucene's BM25 on three
documents, phrase matching, the default formula on chosen inputs, and the metrics on tiny rankings."""

import math

import numpy as np
import pytest

from kb_service.engines.embedded.columns import KeywordColumn
from kb_service.engines.embedded.text_index import FieldTextIndex
from kb_service.evaluation import mrr_at, ndcg_at, recall_at
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


def test_ndcg_at_10_on_a_tiny_ranking():
    """x, y, z with y graded 2 and z graded 1: DCG = 3 / log2 3 + 1 / log2 4 = 1.8927893 + 0.5 = 2.3927893;
    ideal y, z: 3 / 1 + 1 / log2 3 = 3.6309298; nDCG = 0.6590018."""
    assert ndcg_at(["x", "y", "z"], GRADES) == pytest.approx(0.6590018, abs=1e-6)
    assert ndcg_at(["y", "z", "x"], GRADES) == pytest.approx(1.0)
    assert ndcg_at(["x"] * 10 + ["y"], GRADES) == 0.0  # y at rank 11 is past the cut-off
    assert ndcg_at(["x"], {}) == 0.0


def test_mrr_at_10_counts_only_exact_records():
    assert mrr_at(["x", "z", "y"], GRADES) == pytest.approx(1 / 3)  # z is graded 1, not an exact answer
    assert mrr_at(["z", "x"], GRADES) == 0.0
    assert mrr_at([f"n{i}" for i in range(10)] + ["y"], GRADES) == 0.0


def test_recall_at_k():
    assert recall_at(["x", "y"], GRADES, 2) == 0.5
    assert recall_at(["z", "x", "y"], GRADES, 2) == 0.5
    assert recall_at(["z", "x", "y"], GRADES, 3) == 1.0
    assert math.isclose(recall_at(["x"], {}, 10), 0.0)
