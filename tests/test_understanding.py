"""Query understanding with real jieba and a dictionary built from a real KB."""

import pytest

from query_understanding import QueryUnderstander, UnderstandingConfig
from query_understanding.segmenter import Segmenter
from query_understanding.understander import KbDictionary, QueryError

CONFIG = UnderstandingConfig(attribute_synonyms={"人口": ("多少人",)})


@pytest.fixture(scope="module")
def understander(search_service):
    dictionary = search_service.state.index.dictionary
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


@pytest.mark.parametrize("query", ["", "   ", "长" * 300])
def test_empty_or_long_query_is_refused(understander, query):
    with pytest.raises(QueryError):
        understander.parse(query)
