"""`kb tune` on a small judged KB: from a config with a planted bad weight (the linked-answer boost and the
attribute term switched off, so a question about 杭州's population ranks its other records alike), coordinate
ascent must find a better weight, score better on held-out folds, and write an overlay, never the config."""

from __future__ import annotations

import json

from kb_service.cli.main import main
from kb_service.config import load_config
from tests.conftest import config_text, loaded, read_jsonl


def test_tune_finds_the_planted_better_weight_and_writes_an_overlay(tmp_path, capital_kb_file, monkeypatch,
                                                                    capsys):
    data_dir = loaded(tmp_path / "data", capital_kb_file)
    base = tmp_path / "planted.yaml"
    base.write_text(config_text(
        ("      weight: 0.2                    # the", "      weight: 0.0                    # the"),
        ("    attribute_term: 15", "    attribute_term: 0"),
        ("    attribute_match: 5", "    attribute_match: 0"),
        ("    value_match: 5", "    value_match: 0")), encoding="utf-8")
    rows = read_jsonl(capital_kb_file)
    queries, qrels = tmp_path / "q.jsonl", tmp_path / "qrels.tsv"
    with queries.open("w", encoding="utf-8") as q, qrels.open("w", encoding="utf-8") as r:
        for n, row in enumerate(rows):
            qid = f"cap:{n}"
            q.write(json.dumps({"qid": qid, "task": "capital-attr", "query": f"{row['knowledge']}的{row['attribute']}"},
                               ensure_ascii=False) + "\n")
            r.write(f"{qid} 0 {row['kid']} 2\n")
            for other in rows:
                if other["ref"] == row["ref"] and other["kid"] != row["kid"]:
                    r.write(f"{qid} 0 {other['kid']} 1\n")
    monkeypatch.setenv("KB_DATA_DIR", str(data_dir))
    out = tmp_path / "tuned.yaml"
    assert main(["--config", str(base), "tune", "--queries", str(queries), "--qrels", str(qrels), "--folds", "2",
                 "--rounds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    mean = next(line for line in printed.splitlines() if line.startswith("| mean"))
    default, tuned = (float(cell) for cell in mean.strip("|").split("|")[3:5])
    print(printed)
    assert tuned >= default, printed
    overlay, planted = load_config(out), load_config(base)
    restored = {step.strategy: step.weight for step in overlay.scoring.rescoring if hasattr(step, "weight")}
    assert restored["linked_answer_boost"] > 0 or overlay.scoring.boosts.attribute_term > 0, printed
    assert overlay.scoring != planted.scoring and f"extends: {base.resolve()}" in out.read_text()
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
