"""Answer expansion end to end: a real load of a small KB with the real encoder, the default config."""

import pytest

from kb_service.records import KnowledgeRecord
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.answer_expansion import AnswerExpansion, expand_answer
from scoring.hits import ScoredHit
from scoring.planner import SearchRequest, build_plan
from scoring.rescoring import RescoreContext
from tests.conftest import CAPITAL_KB, make_config

QUESTION = "哥伦比亚的首都是哪里"


def entity_blocks(hits) -> list[str]:
    """The entities in ranked order, one entry per run of consecutive hits from the same source."""
    blocks: list[str] = []
    for hit in hits:
        if not blocks or blocks[-1] != hit.record.ref:
            blocks.append(hit.record.ref)
    return blocks


@pytest.fixture(scope="module")
def services(capital_data_dir, capital_service):
    off = make_config(capital_data_dir, ("    enabled: true            #", "    enabled: false           #"))
    assert not off.scoring.answer_expansion.enabled
    return capital_service, SearchService(Runtime(off))


def test_the_capital_follows_the_answer_and_its_country(services):
    expanded, _ = services
    response = expanded.search(SearchRequest(query=QUESTION, size=20, explain=True))
    assert response.hits[0].record.kid == "geo:country:CO:首都"
    assert entity_blocks(response.hits)[:3] == ["geonames-countries#CO", "geonames#3688689", "geonames#4575352"]
    capital = [h for h in response.hits if h.record.knowledge == "波哥大"]
    assert len(capital) == 3 and all(h.components[-1].name == "answer_expansion" for h in capital)
    for hit in response.hits:
        assert hit.score == pytest.approx(sum(c.contribution for c in hit.components))


def test_the_capital_is_the_namesake_that_names_the_country(services):
    expanded, _ = services
    hits = expanded.search(SearchRequest(query="英国的首都是哪里", size=20)).hits
    assert entity_blocks(hits)[:3] == ["geonames-countries#GB", "geonames#2643743", "geonames#6058560"]


def test_a_namesake_the_engine_ranks_higher_still_follows_the_capital(services):
    """The engine's order is given here (London, Ontario first) because the small KB cannot make it so."""
    expanded, _ = services
    hit_of = {f"{prefix}:{attribute}": (KnowledgeRecord(kid=f"{prefix}:{attribute}", knowledge=knowledge,
                                                        attribute=attribute, value=value, category=category, ref=ref))
              for prefix, knowledge, category, ref, values in CAPITAL_KB for attribute, value in values.items()}
    engine_order = ["geo:city:6058560:国家", "geo:city:6058560:人口", "geo:city:2643743:国家", "geo:city:2643743:人口"]
    parsed = expanded.understand("英国的首都是哪里")
    context = RescoreContext(null_confidence=0.5, entities={"英国": 1.0}, attributes={"首都": 1.0})
    hits, added = expand_answer(
        [ScoredHit(hit_of["geo:country:GB:首都"], 2.0), ScoredHit(hit_of["geo:country:GB:人口"], 1.5)], context,
        AnswerExpansion(), build_plan(parsed, SearchRequest(query=parsed.original), expanded.config.scoring),
        lambda value: [("伦敦",)] if "伦敦" in value else [],
        lambda plan: [ScoredHit(hit_of[kid], 0.5 - i / 10) for i, kid in enumerate(engine_order)])
    assert [h.record.kid for h in hits] == ["geo:country:GB:首都", "geo:country:GB:人口", *engine_order[2:],
                                            *engine_order[:2]]
    assert added == 4


def test_without_expansion_the_namesake_comes_before_the_capital(services):
    _, plain = services
    blocks = entity_blocks(plain.search(SearchRequest(query=QUESTION, size=20)).hits)
    assert blocks.index("geonames#4575352") < blocks.index("geonames#3688689")


def test_a_value_naming_no_entity_expands_nothing(services):
    expanded, plain = services
    question = SearchRequest(query="杭州的人口", size=20)
    assert [h.record.kid for h in expanded.search(question).hits] == [h.record.kid for h in plain.search(question).hits]
