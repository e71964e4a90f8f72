"""`kb tune` on a small judged KB: from a config with a planted bad weight (the exact-value boost switched off,
so a pasted value no longer finds the record that states it above the entity it names), coordinate ascent
must repair the damage (by that weight or by others that do its work), score better on held-out folds, and
write an overlay, never the config."""

from __future__ import annotations

import json

from kb_service.cli.main import main
from kb_service.config import load_config
from tests.conftest import config_text, loaded, read_jsonl


def test_tune_finds_the_planted_better_weight_and_writes_an_overlay(tmp_path, capital_kb_file, monkeypatch,
                                                                    capsys):
    data_dir = loaded(tmp_path / "data", capital_kb_file)
    base = tmp_path / "planted.yaml"
    base.write_text(config_text(("    value_term: 10", "    value_term: 0")), encoding="utf-8")
    rows = [row for row in read_jsonl(capital_kb_file) if len(row["value"]) > 2]
    queries, qrels = tmp_path / "q.jsonl", tmp_path / "qrels.tsv"
    with queries.open("w", encoding="utf-8") as q, qrels.open("w", encoding="utf-8") as r:
        for n, row in enumerate(rows):  # a user pastes a value and wants the record that states it
            q.write(json.dumps({"qid": f"cap:{n}", "task": "value-lookup", "query": row["value"]},
                               ensure_ascii=False) + "\n")
            r.write(f"cap:{n} 0 {row['kid']} 2\n")
    monkeypatch.setenv("KB_DATA_DIR", str(data_dir))
    out = tmp_path / "tuned.yaml"
    assert main(["--config", str(base), "tune", "--queries", str(queries), "--qrels", str(qrels), "--folds", "3",
                 "--rounds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    mean = next(line for line in printed.splitlines() if line.startswith("| mean"))
    default, tuned = (float(cell) for cell in mean.strip("|").split("|")[3:5])
    assert tuned > default, printed
    original = tmp_path / "original.yaml"
    original.write_text(config_text(), encoding="utf-8")
    assert main(["eval", "--queries", str(queries), "--qrels", str(qrels), "--json", "--config", str(base),
                 "--config", str(original), "--config", str(out)]) == 0
    evaluated = capsys.readouterr().out
    planted_run, original_run, tuned_run = (run["tasks"][0]["ndcg10"]
                                            for run in json.loads(evaluated))
    assert planted_run < original_run <= tuned_run, "the planted weight costs relevance and tuning wins it back"
    assert f"extends: {base.resolve()}" in out.read_text()
    assert main(["--config", str(base), "tune", "--queries", str(queries), "--qrels", str(qrels),
                 "--out", str(base)]) == 2, "the tuned config itself is never overwritten"


def test_an_overlay_without_changes_is_the_config_itself(tmp_path):
    """`scoring: {}` in an overlay states "no scoring settings": an unchanged tuning must not write it."""
    from kb_service.config import read_raw
    from kb_service.tuning import overlay
    from tests.conftest import REPO

    base = REPO / "config.yaml"
    path = tmp_path / "same.yaml"
    path.write_text(overlay(base, read_raw(base), read_raw(base)), encoding="utf-8")
    assert load_config(path).scoring == load_config(base).scoring


def test_a_candidate_built_in_memory_is_the_config_its_written_overlay_gives(tmp_path):
    """Tuning scores candidates from changed values without writing and parsing each; the overlay it finally
    writes must give the same config (weights, formula, version) as the candidate it scored."""
    from dataclasses import replace

    from kb_service.config import config_from_raw, read_raw
    from kb_service.tuning import overlay, tunable_paths, with_value
    from tests.conftest import REPO

    base = REPO / "config.yaml"
    raw = read_raw(base)
    paths = tunable_paths(raw)
    candidate = with_value(with_value(raw, paths[0], 3.5), paths[-1], 0.0)
    written = tmp_path / "tuned.yaml"
    written.write_text(overlay(base, raw, candidate), encoding="utf-8")
    in_memory, from_file = config_from_raw(candidate, str(written)), load_config(written)
    assert replace(in_memory, source="") == replace(from_file, source="")
    assert in_memory.version != load_config(base).version
