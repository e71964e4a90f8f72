"""Opening a version does no per-record work: records are read when returned, and the entity-link model
fitted at build is reused when the understanding settings and the encoder are the ones it was fitted under."""

from __future__ import annotations

import pytest

from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from query_understanding.understander import QueryUnderstander
from tests.conftest import make_config, read_jsonl


def test_the_link_model_fitted_at_build_is_reused_and_refitted_when_settings_change(loaded_data_dir,
                                                                                    monkeypatch):
    fits = []
    original = QueryUnderstander._fit_link_model
    monkeypatch.setattr(QueryUnderstander, "_fit_link_model", lambda self: fits.append(1) or original(self))
    same = SearchService(Runtime(make_config(loaded_data_dir)))
    stored = same.state.version.dictionary.link_model
    assert fits == [] and stored["fingerprint"], "the build fitted it; opening reused it"
    assert list(same.state.understander.link_model.weights) == stored["weights"]
    changed = SearchService(Runtime(make_config(loaded_data_dir, ("  min_entity_chars: 2", "  min_entity_chars: 3"))))
    assert fits == [1], "other understanding settings: fitted again at open"
    assert changed.state.understander.stored_link_model()["fingerprint"] != stored["fingerprint"]


def test_records_are_read_from_the_mapped_file_when_returned(capital_data_dir, capital_kb_file):
    version = SearchService(Runtime(make_config(capital_data_dir))).state.version
    rows = read_jsonl(capital_kb_file)
    assert version.size == len(rows)
    for row in rows:
        record = version.get(row["kid"])
        assert (record.kid, record.knowledge, record.attribute, record.value) == (
            row["kid"], row["knowledge"], row["attribute"], row["value"])
    assert version.get("no-such-kid") is None
    with pytest.raises(IndexError):
        version.record(version.size)


def test_jieba_with_the_kb_names_is_restored_from_words_stored_at_build(loaded_data_dir):
    from query_understanding.segmenter import Segmenter

    dictionary = SearchService(Runtime(make_config(loaded_data_dir))).state.version.dictionary
    assert dictionary.segmenter_words and dictionary.segmenter_words["total"] > 0, "the build stored them"
    restored, rebuilt = dictionary.segmenter(), Segmenter(dictionary.user_words())
    texts = [f"{name}的人口有多少" for name in list(dictionary.entity_names)[:300]]
    texts += ["我们的方针是不拒绝谈判，要求对方完全承认八条", "Springfield Missouri time zone"]
    assert [restored.tokens(t) for t in texts] == [rebuilt.tokens(t) for t in texts]
    assert [rebuilt.tokens(t) for t in texts] != [Segmenter().tokens(t) for t in texts], "the names matter"


def test_a_saved_text_index_opens_mapped_and_scores_as_built(tmp_path):
    from kb_service.engines.embedded.text_index import FieldTextIndex

    texts = ["杭州 人口", "画蛇添足 解释 比喻 做 了 多余 的 事", "", "new york city", "杭州 时区", "杭州  杭州"]
    built = FieldTextIndex.build(texts, k1=1.2, b=0.75)
    built.save(tmp_path / "field")
    mapped = FieldTextIndex.load(tmp_path / "field", k1=1.2, b=0.75)
    for token in ("杭州", "人口", "new", "事", "absent"):
        assert mapped.term_postings(token).docs.tolist() == built.term_postings(token).docs.tolist()
        assert mapped.term_postings(token).scores.tolist() == built.term_postings(token).scores.tolist()
    assert mapped.term_postings("杭州").docs.tolist() == [0, 4, 5]
    for phrase in (["杭州", "人口"], ["new", "york"], ["做", "了", "多余"], ["人口", "杭州"]):
        assert mapped.phrase_postings(phrase).docs.tolist() == built.phrase_postings(phrase).docs.tolist()
    assert mapped.phrase_postings(["new", "york"]).docs.tolist() == [3]
    assert mapped.phrase_postings(["人口", "杭州"]).docs.tolist() == []
    flatter = FieldTextIndex.load(tmp_path / "field", k1=1.2, b=0.0)
    assert flatter.term_postings("杭州").scores.tolist() != mapped.term_postings("杭州").scores.tolist(), \
        "b applies when a version opens, without a rebuild"
