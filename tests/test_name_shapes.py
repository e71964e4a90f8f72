"""KBs of shapes the dev sets lack (tests/kb_shapes.py): linking names of any length and script (long
English names that contain other entities' names, Chinese questions about Latin-script product names;
accuracy is the share of questions whose first confident entity is the one asked about), and questions
about an entity as a whole in wordings no list holds."""

import pytest

from query_understanding.linking import AliasLinker, NameIndex
from query_understanding.normalise import alias_key
from scoring.planner import SearchRequest
from tests.conftest import loaded, serving
from tests.kb_shapes import gadgets, towns, workshop, write_jsonl

LONG = 24  # the old linking window: names longer than this could not be linked at all


def _accuracy(service, questions) -> dict[str, float]:
    groups: dict[str, list[bool]] = {}
    for text, _kid, name in questions:
        linked = [e.name for e in service.understand(text).entities if e.confident]
        groups.setdefault("long" if len(name) > LONG else "short", []).append(linked[:1] == [name])
    return {group: sum(hits) / len(hits) for group, hits in groups.items()}


@pytest.mark.parametrize("make", [workshop, gadgets])
def test_names_of_every_length_link_as_well_as_short_ones(make, tmp_path):
    records, questions = make()
    service = serving(loaded(tmp_path, write_jsonl(records, tmp_path / "kb.jsonl")))
    accuracy = _accuracy(service, questions)
    assert set(accuracy) == {"short", "long"} and min(accuracy.values()) >= 0.98, accuracy


def test_the_longest_name_wins_and_spelling_variants_fold():
    index = NameIndex(["harbor lantern", "harbor lantern with brass hood", "heavy-duty drill",
                       "x1 carbon, deluxe edition", "杭州"])
    assert [s.name for s in index.longest_matches("is the harbor lantern with brass hood heavy", 2)] == [
        "harbor lantern with brass hood"]
    assert [s.name for s in index.longest_matches("the harbor lantern with a hood", 2)] == ["harbor lantern"]
    spans = index.longest_matches("weight of the heavy duty drill", 2)
    assert [(s.name, s.text) for s in spans] == [("heavy-duty drill", "heavy duty drill")]
    spans = index.longest_matches("x1 carbon deluxe edition多重", 2)
    assert [(s.name, s.start, s.end) for s in spans] == [("x1 carbon, deluxe edition", 0, 24)]
    assert index.longest_matches("harbor lanterns", 2) == []  # not on a word boundary
    assert [s.name for s in index.longest_matches("杭州人口", 2)] == ["杭州"]


def test_names_sharing_a_folded_form_keep_the_spelling_typed():
    index = NameIndex(["lower-case", "lower case"])
    assert [s.name for s in index.longest_matches("what is lower case", 2)] == ["lower case"]
    assert [s.name for s in index.longest_matches("what is lower-case", 2)] == ["lower-case"]


def test_a_question_about_the_whole_entity_puts_its_overview_record_first(tmp_path):
    records, questions = towns()
    service = serving(loaded(tmp_path, write_jsonl(records, tmp_path / "kb.jsonl")))
    first = 0
    for text, kid, _name in questions:
        parsed = service.understand(text)
        assert parsed.overview > max((a.confidence for a in parsed.attributes), default=0.0), text
        first += service.search(SearchRequest(query=text, size=5)).hits[0].record.kid == kid
    assert first >= 0.98 * len(questions), (first, len(questions))
    asked = service.understand(f"{questions[0][2]}的人口有多少")  # an attribute the lexicon names: no overview
    assert asked.overview == 0.0 and asked.attributes[0].name == "人口"


def test_aliases_of_any_length_link_as_typed_by_sound_and_by_folded_spelling():
    """One automaton over every alias key: a romanised alias of five words, a Chinese name of eleven
    characters heard through its pinyin, and no alias made of one character's sound."""
    listed = (("Pu Luo Ta La Si", "普罗塔拉斯"), ("zhang", "姜镇"), ("宁乡县", "玉潭"),
              ("sheng hu an bao di si ta tu si te pei ke", "圣胡安包蒂斯塔图斯特佩克"))
    aliases = {alias_key(alias): entity for alias, entity in listed}
    linker = AliasLinker(aliases)
    [typed] = linker.link("where is pu luo-ta la si")
    assert (typed.text, typed.name, typed.confidence) == ("pu luo-ta la si", "普罗塔拉斯", 0.9)
    [heard] = linker.link("圣胡安包蒂斯塔图斯特佩克在哪里")
    assert (heard.text, heard.name, heard.confidence) == ("圣胡安包蒂斯塔图斯特佩克", "圣胡安包蒂斯塔图斯特佩克", 0.8)
    assert linker.link("长门市是哪里") == [] and linker.link("lupulotalasi") == []
    [chinese] = linker.link("宁乡县的人口")
    assert (chinese.text, chinese.name) == ("宁乡县", "玉潭")


def test_dictionaries_derived_in_a_build_share_one_name_automaton():
    from dataclasses import replace

    from query_understanding.dictionary import KbDictionary

    dictionary = KbDictionary.from_pairs([("杭州", "城市"), ("Harbor Lantern", "tool")], {"人口"})
    sampled = dictionary.with_samples([("杭州", "人口", "1200万", "城市")])
    fitted = replace(sampled.with_learned({}, {}), link_model={"weights": []})
    assert fitted.name_index is sampled.name_index is dictionary.name_index
    other = KbDictionary.from_pairs([("杭州", "城市")], {"人口"})
    assert other.name_index is not dictionary.name_index and len(other.name_index) == 1
