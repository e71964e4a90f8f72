"""Value shapes: what an attribute's values look like is read from the KB, and a question asking for a value
of that look reaches the attribute without a list entry (tests/kb_shapes.py: KBs made here, questions in
words no config list holds)."""

import dataclasses

import pytest

from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from query_understanding.value_shapes import attribute_shapes, value_shape
from tests.conftest import loaded, make_config
from tests.kb_shapes import poems, trails, write_jsonl


@pytest.mark.parametrize(("value", "shape"), [
    ("qīng xī yuè yè", "reading"), ("/ˈhɑːbə ˈlæntən/", "reading"), ("1987", "date"), ("1987年5月", "date"),
    ("2024-03-01", "date"), ("12.5 km", "quantity"), ("594克", "quantity"), ("3,204", "quantity"),
    ("450 EUR", "money"), ("￥1299", "money"), ("《松风集》", "title"), ("30.125, 120.250", "place"),
    ("https://example.org/a", "link"), ("否", "yes_no"), ("Corwin Abara", "name"), ("林澜舟", "name"),
    ("Fig Tree Bay, Protaras, pu luo ta", "list"), ("gravel", None), ("qing xi", None),
    ("a small tool for splitting logs along the grain, swung with both hands above the head", None),
])
def test_a_values_shape_is_read_from_its_look(value, shape):
    assert value_shape(value) == shape


def test_an_attribute_takes_the_shape_most_of_its_values_have():
    rows = [("重量", f"{n}克") for n in range(10)] + [("重量", "未知")] * 4
    rows += [("材质", material) for material in ("铝", "钢", "铝", "木", "钢", "铝")]  # few distinct short values
    rows += [("备注", note) for note in ("见说明书", "2019年", "无")]  # no majority, all distinct
    assert attribute_shapes(rows) == {"重量": "quantity", "材质": "label"}


def _linked_first(service: SearchService, questions) -> float:
    linked = 0
    for text, kid, _ in questions:
        first = next(iter(service.understand(text).attributes), None)
        linked += first is not None and first.name == kid.split(":", 2)[2]
    return linked / len(questions)


@pytest.mark.parametrize("make", [poems, trails])
def test_questions_in_unlisted_words_reach_the_attribute_whose_values_answer_them(make, tmp_path):
    """The same KB and questions with and without the value-shape forms: the forms must move linking."""
    records, questions = make()
    config = make_config(loaded(tmp_path, write_jsonl(records, tmp_path / "kb.jsonl")))
    service = SearchService(Runtime(config))
    with_shapes = _linked_first(service, questions)
    service.reload_config(dataclasses.replace(config, version="no-shapes", query_understanding=dataclasses.replace(
        config.query_understanding, value_shape_questions={})))
    without = _linked_first(service, questions)
    assert with_shapes >= without + 0.05 and with_shapes >= 0.6, (with_shapes, without)
