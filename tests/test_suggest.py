"""Type-ahead over a version's names: prefix, pinyin, initials, aliases, one typo, popularity from the KB and
from what users asked; and `GET /v1/suggest` on the real app over the demo cities."""

from __future__ import annotations

import pytest
from pypinyin import lazy_pinyin

from kb_service.http.app import create_app
from kb_service.runtime import Runtime
from query_understanding.dictionary import KbDictionary
from query_understanding.linking import pinyin_key
from query_understanding.suggest import SuggestIndex
from scoring.planner import SearchRequest

CITIES = ["杭州", "杭锦旗", "湖州", "惠州", "北京", "北海", "伦敦", "Lund"]
OTHER_NAMES = [("杭州", "Hangzhou, Hang-chou, Hangzhou Shi"), ("北京", "Beijing, Peking, Pékin, Pequim"),
               ("伦敦", "London, Londres, Londra"), ("北海", "Beihai")]


def _index(asked: dict[str, int] | None = None) -> SuggestIndex:
    dictionary = KbDictionary.from_pairs([(name, "城市") for name in CITIES], ["人口"], OTHER_NAMES)
    keys = {key: pinyin_key(key) for key in dictionary.entity_names if pinyin_key(key)}
    dictionary = KbDictionary(**{**dictionary.__dict__, "pinyin_keys": keys})
    return SuggestIndex.build(dictionary, asked)


def _names(index: SuggestIndex, text: str) -> list[str]:
    return [s.text for s in index.suggest(text)]


@pytest.mark.parametrize("name", [n for n in CITIES if not n.isascii()])
def test_every_chinese_name_is_found_by_its_start_its_pinyin_and_its_initials(name):
    index = _index()
    syllables = lazy_pinyin(name)
    assert name in _names(index, name[:1]) and _names(index, name)[0] == name
    assert name in _names(index, "".join(syllables)[:4])
    assert name in _names(index, "".join(s[0] for s in syllables))


def test_another_name_and_its_accents_lead_to_the_entity():
    index = _index()
    assert _names(index, "Peki")[0] == "北京" and _names(index, "pekin")[0] == "北京"
    found = index.suggest("lond")
    assert found[0].text == "伦敦" and found[0].how == "alias" and not found[0].typo


@pytest.mark.parametrize(("typed", "meant"), [("hangzou", "杭州"), ("bejing", "北京"), ("lodnon", "伦敦"),
                                              ("杭洲", "杭州")])
def test_one_typo_is_forgiven_and_marked(typed, meant):
    found = {s.text: s for s in _index().suggest(typed)}
    assert meant in found
    assert found[meant].typo == typed.isascii()  # a Chinese homophone is a match by sound, not a typo


def test_an_entity_the_kb_says_more_about_ranks_first_and_users_can_lift_another():
    """杭州 has other names listed, 杭锦旗 none: 杭州 first; once users have asked for 杭锦旗 often, it leads."""
    assert _names(_index(), "杭")[:2] == ["杭州", "杭锦旗"]
    assert _names(_index({"杭锦旗": 500}), "杭")[:2] == ["杭锦旗", "杭州"]


def test_nothing_to_suggest_for_text_that_starts_no_name():
    assert _index().suggest("zzzz") == [] and _index().suggest("  ") == []


@pytest.fixture(scope="module")
def client(search_service):
    return create_app(search_service.runtime, service=search_service, watch=False).test_client()


def test_the_endpoint_suggests_cities_of_the_served_version(client, search_service):
    dictionary = search_service.state.version.dictionary
    chinese = [names[0] for names in dictionary.entity_names.values() if pinyin_key(names[0])][:40]
    hits = 0
    for name in chinese:
        body = client.get("/v1/suggest", query_string={"q": "".join(lazy_pinyin(name)), "size": 5}).get_json()
        hits += name in [s["text"] for s in body["suggestions"]]
    assert hits >= 0.9 * len(chinese)
    error = client.get("/v1/suggest", query_string={"q": "hz", "size": 0}).get_json()["error"]
    assert (error["field"], error["code"]) == ("size", "out_of_range")
    assert client.get("/v1/suggest").get_json()["error"]["code"] == "required"


def test_entities_users_click_rise_in_the_suggestions(tmp_path, small_kb_file):
    """An entity that a prefix does not bring into the top 5 does once users have clicked its records."""
    from kb_service.serving.service import SearchService
    from tests.conftest import loaded, make_config

    config = make_config(loaded(tmp_path / "data", small_kb_file))
    service = SearchService(Runtime(config))
    app = create_app(Runtime(config), service=service, watch=False)
    before = SuggestIndex.build(service.state.version.dictionary)
    by_start: dict[str, list[str]] = {}
    for names in service.state.version.dictionary.entity_names.values():
        by_start.setdefault(names[0][0], []).append(names[0])
    start, names = max(by_start.items(), key=lambda item: len(item[1]))
    shown = {s.text for s in before.suggest(start, 5)}
    target = next(name for name in sorted(names) if name not in shown)
    kid = next(h.record.kid for h in service.search(SearchRequest(query=target, size=20)).hits
               if h.record.knowledge == target)
    clicks = [{"query_id": f"q{n}", "kid": kid, "position": 3, "action": "click"} for n in range(30)]
    assert app.test_client().post("/v1/events", json={"events": clicks}).status_code == 202
    assert service.suggest(start, 5, app.extensions["kb_asked"])[0].text == target
