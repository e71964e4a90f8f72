"""Each rescoring strategy on real records; every score change stays visible as a component."""

from datetime import datetime

import pytest

from kb_service.config import ConfigError, parse_config
from kb_service.records import KnowledgeRecord
from scoring.hits import ScoredHit
from scoring.rescoring import (
    CategoryWeights,
    ConfidenceBoost,
    EntityGrouping,
    ExpertVerifiedBoost,
    ExpiryDecay,
    LinkedAnswerBoost,
    MaxPerEntity,
    MinScore,
    NearDuplicateCollapse,
    RecencyDecay,
    RescoreContext,
    ScoreNormalisation,
    rescore,
)

NOW = datetime(2026, 6, 1)
CONTEXT = RescoreContext(null_confidence=0.5, now=NOW)


def record(kid, knowledge="杭州", value="v", **fields) -> KnowledgeRecord:
    return KnowledgeRecord(kid=kid, knowledge=knowledge, attribute="人口", value=value, category="城市", **fields)


def hits_of(*pairs) -> list[ScoredHit]:
    hits = []
    for rec, text, cosine in pairs:
        hit = ScoredHit(rec, 0.0)
        hit.add("engine", "text", text, 1.0)
        hit.add("engine", "cosine", cosine, 1.0)
        hits.append(hit)
    return hits


def sums_hold(hits):
    return all(h.score == pytest.approx(sum(c.contribution for c in h.components)) for h in hits)


def test_boosts_add_visible_components():
    hits = hits_of((record("a", confidence=0.9, expert_verified=1), 0.5, 0.5), (record("b"), 0.5, 0.5))
    ranked = rescore(hits, (ConfidenceBoost(weight=0.1), ExpertVerifiedBoost(weight=0.2),
                            CategoryWeights(weights={"城市": 0.3})), CONTEXT)
    assert [h.record.kid for h in ranked] == ["a", "b"]
    assert ranked[0].score == pytest.approx(1.0 + 0.09 + 0.2 + 0.3)
    assert ranked[1].score == pytest.approx(1.0 + 0.05 + 0.3)
    assert sums_hold(ranked)


def test_linked_answer_and_its_source_siblings_rise_above_a_namesake():
    def country(attribute, ref="geonames-countries#CO"):
        return KnowledgeRecord(kid=f"{ref}:{attribute}", knowledge="哥伦比亚", attribute=attribute, value="v",
                               category="国家", ref=ref)

    answer, sibling, namesake = country("首都"), country("人口"), country("人口", ref="geonames#4575352")
    context = RescoreContext(null_confidence=0.5, entities={"哥伦比亚": 1.0}, attributes={"首都": 1.0})
    hits = rescore(hits_of((namesake, 0.55, 0.3), (sibling, 0.5, 0.3), (answer, 0.45, 0.3)),
                   (LinkedAnswerBoost(weight=0.2, sibling_share=0.5),), context)
    assert [(h.record.kid, round(h.score, 6)) for h in hits] == [
        (answer.kid, 0.95), (sibling.kid, 0.9), (namesake.kid, 0.85)]
    assert sums_hold(hits)
    assert rescore(hits_of((answer, 0.4, 0.3)), (LinkedAnswerBoost(),), CONTEXT)[0].score == pytest.approx(0.7)


def test_a_bare_name_is_answered_by_the_overview_attribute_of_its_category():
    def city(attribute, knowledge="杭州"):
        return KnowledgeRecord(kid=f"{knowledge}:{attribute}", knowledge=knowledge, attribute=attribute, value="v",
                               category="城市", ref=f"geonames#{knowledge}")

    named = RescoreContext(null_confidence=0.5, entities={"杭州": 1.0})
    boost = LinkedAnswerBoost(weight=0.2, sibling_share=0.5, overview_attributes={"城市": "国家", "成语": "解释"})
    hits = rescore(hits_of((city("人口"), 0.5, 0.3), (city("国家"), 0.45, 0.3), (city("国家", "温州"), 0.62, 0.3)),
                   (boost,), named)
    assert [(h.record.kid, round(h.score, 6)) for h in hits] == [
        ("杭州:国家", 0.95), ("温州:国家", 0.92), ("杭州:人口", 0.9)]
    asked = RescoreContext(null_confidence=0.5, entities={"杭州": 1.0}, attributes={"人口": 1.0})
    assert rescore(hits_of((city("人口"), 0.5, 0.3), (city("国家"), 0.45, 0.3)), (boost,), asked)[0].score == 1.0
    assert sums_hold(hits)


def test_entity_grouping_ranks_entities_by_their_best_record_and_keeps_namesakes_apart():
    def idiom(attribute, ref):
        return KnowledgeRecord(kid=f"{ref}:{attribute}", knowledge="画蛇添足", attribute=attribute, value="v",
                               category="成语", ref=ref)

    best, sibling = idiom("解释", "a"), idiom("拼音", "a")
    namesake, other = idiom("解释", "b"), record("other", knowledge="守株待兔")
    hits = rescore(hits_of((best, 0.5, 0.3), (namesake, 0.3, 0.2), (other, 0.35, 0.3), (sibling, 0.1, 0.2)),
                   (EntityGrouping(weight=3),), CONTEXT)
    assert [h.record.kid for h in hits] == ["a:解释", "a:拼音", "other", "b:解释"]
    assert hits[1].components[-1].raw == pytest.approx(0.8)
    assert sums_hold(hits)
    mild = rescore(hits_of((best, 0.5, 0.3), (namesake, 0.4, 0.3), (sibling, 0.1, 0.2)), (EntityGrouping(weight=0.1),),
                   CONTEXT)
    assert [h.record.kid for h in mild] == ["a:解释", "b:解释", "a:拼音"]
    with pytest.raises(ValueError, match="weight"):
        EntityGrouping(weight=-1)


def test_recency_and_expiry_decay():
    fresh = record("fresh", update_timestamp="2026-06-01 00:00:00")
    old = record("old", update_timestamp="2025-06-01 00:00:00")
    expiring = record("expiring", expires_at="2026-06-04 00:00:00")
    hits = rescore(hits_of((fresh, 0, 0), (old, 0, 0), (expiring, 0, 0)),
                   (RecencyDecay(weight=1.0, half_life_days=365), ExpiryDecay(weight=1.0, window_days=7)), CONTEXT)
    by_kid = {h.record.kid: h.score for h in hits}
    assert by_kid["fresh"] == pytest.approx(1.0)
    assert by_kid["old"] == pytest.approx(0.5, abs=0.01)
    assert by_kid["expiring"] == pytest.approx(-4 / 7)


def test_near_duplicates_and_entity_cap():
    hits = hits_of((record("a", value="美丽的城市"), 0.9, 0), (record("b", value="美丽城市。"), 0.5, 0),
                   (record("c", knowledge="上海"), 0.4, 0), (record("d", value="x"), 0.3, 0))
    collapsed = rescore(hits, (NearDuplicateCollapse(),), CONTEXT)
    assert [h.record.kid for h in collapsed] == ["a", "c", "d"]
    capped = rescore(collapsed, (MaxPerEntity(limit=1), MinScore(threshold=0.35)), CONTEXT)
    assert [h.record.kid for h in capped] == ["a", "c"]


@pytest.mark.parametrize("method", ["minmax", "zscore", "rrf"])
def test_normalisation_keeps_components_summing(method):
    hits = hits_of((record("a"), 3.0, 0.2), (record("b"), 1.0, 0.9), (record("c"), 0.5, 0.1))
    ranked = rescore(hits, (ScoreNormalisation(method=method),), CONTEXT)
    assert sums_hold(ranked)
    scores = [h.score for h in ranked]
    if method == "minmax":
        assert max(scores) == pytest.approx(1.0) and min(scores) == pytest.approx(0.0)
    if method == "rrf":
        assert ranked[-1].record.kid == "c"


def test_disabled_strategy_does_nothing():
    hits = hits_of((record("a"), 1.0, 0.0))
    assert rescore(hits, (ConfidenceBoost(enabled=False),), CONTEXT)[0].score == 1.0


def test_pipeline_from_yaml_and_bad_parameters():
    config = parse_config("scoring:\n  rescoring:\n    - {strategy: category_weights, weights: {成语: 0.2}}\n"
                          "    - {strategy: normalise, method: rrf, rrf_k: 10}\n")
    assert isinstance(config.scoring.rescoring[0], CategoryWeights)
    assert config.scoring.rescoring[1].rrf_k == 10
    with pytest.raises(ConfigError, match=r"x.yaml:3: scoring.rescoring.0.method: method must be one of"):
        parse_config("scoring:\n  rescoring:\n    - {strategy: normalise, method: softmax}\n", "x.yaml")
