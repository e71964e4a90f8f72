"""The formula is defined once: its painless source and its numpy evaluation must agree with the maths."""

import math

import numpy as np
import pytest

from scoring.expressions import evaluate, render_painless
from scoring.formula import ConfidenceTerm, CosineTerm, Formula, RecencyTerm, TextScoreTerm
from scoring.formula_checks import check_formula
from scoring.numpy_functions import NUMPY_FUNCTIONS

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
        "(((params.w_cosine * (((doc['vector'].size() == 0 ? -1.0 : cosineSimilarity(params.query_vector, 'vector'))"
        " + 1.0) / 2.0))"
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


def _config_with(replacement: str, policy: str = "") -> str:
    from tests.conftest import config_text

    text_term = ("      - {term: text, weight: 1.0, normalise: saturation, k: 132}", replacement)
    return config_text(text_term, *([("formula_check: refuse", f"formula_check: {policy}")] if policy else []))


def test_the_documents_sigmoid_is_refused_at_load_with_the_line():
    from kb_service.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(_config_with("      - {term: text, normalise: legacy_sigmoid}"), "c.yaml")
    problem = caught.value.problems[0]
    assert problem.startswith("c.yaml:") and "scoring.formula" in problem
    assert "term 'text': moves against relevance" in problem


def test_the_documents_inverse_log_confidence_is_refused():
    from kb_service.config import ConfigError, parse_config

    text = _config_with("      - {term: text, weight: 1.0, normalise: saturation, k: 132}").replace(
        "transform: log1p", "transform: inverse_log")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    message = caught.value.problems[0]
    assert "term 'confidence': not finite at confidence = 1" in message
    assert "can be negative" in message


def test_warn_policy_serves_a_suspicious_formula(caplog):
    from kb_service.config import parse_config

    config = parse_config(_config_with("      - {term: text, normalise: legacy_sigmoid}", policy="warn"), "c.yaml")
    assert config.scoring.formula.terms[1].normalise == "legacy_sigmoid"
    assert "moves against relevance" in caplog.text


def test_safe_alternatives_pass_the_check():
    formula = Formula((CosineTerm(), TextScoreTerm(normalise="logistic"),
                       ConfidenceTerm(transform="guarded_inverse_log"), RecencyTerm(half_life_days=30)))
    assert check_formula(formula) == []
    confidence = np.array([0.0, 0.5, 1.0])
    values = ConfidenceTerm(transform="guarded_inverse_log").raw()
    raw = evaluate(values, {"confidence": confidence}, {}, NUMPY_FUNCTIONS)
    assert np.all(np.diff(raw) > 0) and raw[-1] == pytest.approx(1.0)


def test_recency_halves_after_the_half_life_and_renders_painless():
    term = RecencyTerm(half_life_days=30)
    raw = evaluate(term.raw(), {"age_days": np.array([0.0, 30.0, 60.0])}, term.params(), NUMPY_FUNCTIONS)
    assert np.allclose(raw, [1.0, 0.5, 0.25])
    assert "doc['update_timestamp'].value.toInstant().toEpochMilli()" in render_painless(term.raw())


def test_intent_weights_change_the_plan_formula_and_are_checked():
    from kb_service.config import ConfigError, parse_config

    config = parse_config(_config_with("      - {term: text, weight: 1.0, normalise: saturation, k: 132}"), "c.yaml")
    open_question = config.scoring.formula_for("open_question")
    assert {t.term: t.weight for t in open_question.terms}["text"] == 0.1
    assert config.scoring.formula_for("attribute_lookup") == config.scoring.formula
    bad = _config_with("      - {term: text, weight: 1.0, normalise: saturation, k: 132}").replace(
        "open_question: {cosine: 1.0, text: 0.1}", "open_question: {cosine: -1.0}")
    with pytest.raises(ConfigError, match=r"falls as cosine rises .*weights for intent open_question"):
        parse_config(bad, "c.yaml")
