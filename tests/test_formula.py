"""The formula is defined once: its painless source and its numpy evaluation must agree with the maths."""

import math

import numpy as np

from kb_service.embedded.index import NUMPY_FUNCTIONS
from scoring.formula import ConfidenceTerm, CosineTerm, Formula, TextScoreTerm

FORMULA = Formula((CosineTerm(weight=1.0), TextScoreTerm(weight=2.0, k=20.0), ConfidenceTerm(weight=0.1)),
                  null_confidence=0.5)


def reference_score(cosine: float, text_score: float, confidence: float | None) -> float:
    """The documented formula written out by hand, independent of the expression compiler."""
    confidence = 0.5 if confidence is None else confidence
    return (cosine + 1) / 2 + 2.0 * text_score / (text_score + 20.0) + 0.1 * math.log1p(confidence)


def test_numpy_evaluation_matches_reference():
    cosine = np.array([0.9, -0.2, 0.0])
    text = np.array([0.0, 12.5, 80.0])
    confidence = np.array([1.0, 0.5, 0.0])
    terms = FORMULA.evaluate_terms({"cosine": cosine, "text_score": text, "confidence": confidence},
                                   NUMPY_FUNCTIONS)
    total = sum(weight * raw for weight, raw in terms.values())
    expected = [reference_score(c, t, f) for c, t, f in zip(cosine, text, confidence, strict=True)]
    assert np.allclose(total, expected)


def test_painless_source_uses_the_documented_api():
    source = FORMULA.painless_source()
    assert source == (
        "(((params.w_cosine * ((cosineSimilarity(params.query_vector, 'vector') + 1.0) / 2.0))"
        " + (params.w_text * (_score / (_score + params.text_k))))"
        " + (params.w_confidence * Math.log1p((doc['confidence'].size() == 0 ? params.null_confidence"
        " : doc['confidence'].value))))"
    )
    params = FORMULA.params()
    assert params["w_text"] == 2.0 and params["text_k"] == 20.0 and params["null_confidence"] == 0.5


def test_legacy_sigmoid_falls_as_text_relevance_rises():
    legacy = Formula((TextScoreTerm(normalise="legacy_sigmoid"),))
    terms = legacy.evaluate_terms({"text_score": np.array([0.0, 1.0, 5.0])}, NUMPY_FUNCTIONS)
    values = terms["text"][1]
    assert np.allclose(values, 1 / (1 + np.exp([0.0, 1.0, 5.0])))
    assert values[0] > values[1] > values[2]
    assert "Math.exp(_score)" in legacy.painless_source()
