"""The `kb` command as a user runs it: real subprocesses, messages naming file and line."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO, read_jsonl


def run_kb(*args: str, data_dir, cwd=REPO) -> subprocess.CompletedProcess:
    environment = {**os.environ, "KB_DATA_DIR": str(data_dir)}
    environment.pop("KB_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "kb_service.cli", *args], env=environment, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_search_json_and_versions(loaded_data_dir):
    result = run_kb("search", "东京的人口", "--size", "3", "--json", data_dir=loaded_data_dir)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["hits"][0]["knowledge"] == "东京" and body["hits"][0]["attribute"] == "人口"
    versions = json.loads(run_kb("versions", "--json", data_dir=loaded_data_dir).stdout)
    assert [v["current"] for v in versions] == [True] and versions[0]["records"] > 1000


def test_bad_file_message_names_file_line_and_field(tmp_path):
    bad = tmp_path / "kb.jsonl"
    bad.write_text('{"kid": "a", "knowledge": "b", "attribute": "c", "value": "d", "category": "e", '
                   '"available": 3}\n', encoding="utf-8")
    result = run_kb("load", str(bad), data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert f"{bad}:1: field 'available': expected 0 or 1" in result.stderr
    assert not (tmp_path / "data" / "embedded" / "CURRENT").exists()


def test_an_empty_file_is_refused_in_one_line_from_any_directory(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    result = run_kb("load", str(empty), data_dir=tmp_path / "data", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("kb: ")]
    assert len(message) == 1 and str(empty) in message[0] and "no records" in message[0]
    assert not (tmp_path / "data" / "embedded" / "CURRENT").exists()


def test_search_before_any_load_says_what_to_do(tmp_path):
    result = run_kb("search", "杭州", data_dir=tmp_path / "empty")
    assert result.returncode == 2 and "kb load" in result.stderr


def test_bad_config_names_file_and_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("encoder:\n  provider: word2vec\n", encoding="utf-8")
    result = run_kb("--config", str(config), "versions", data_dir=tmp_path)
    assert result.returncode == 2 and f"{config}:2: encoder.provider" in result.stderr


def test_judged_query_files_are_checked_line_by_line(tmp_path):
    """`kb eval` and `kb tune` read an analyst's files: a missing one or a bad line is one message, exit 2."""
    queries, qrels = tmp_path / "queries.jsonl", tmp_path / "qrels.tsv"
    queries.write_text('{"qid": "q1", "task": "t", "query": "杭州"}\n{"qid": "q2"}\n', encoding="utf-8")
    qrels.write_text("q1 0 k1 2\nq1 k1 two\n", encoding="utf-8")
    for command in (["eval"], ["tune", "--out", str(tmp_path / "tuned.yaml")]):
        missing = run_kb(*command, "--queries", str(tmp_path / "nope.jsonl"), "--qrels", str(qrels),
                         data_dir=tmp_path)
        assert missing.returncode == 2 and "Traceback" not in missing.stderr
        assert f"{tmp_path / 'nope.jsonl'}: cannot read" in missing.stderr
        bad = run_kb(*command, "--queries", str(queries), "--qrels", str(qrels), data_dir=tmp_path)
        assert bad.returncode == 2 and f"{queries}:2: expected a JSON object" in bad.stderr, bad.stderr
    queries.write_text('{"qid": "q1", "task": "t", "query": "杭州"}\n', encoding="utf-8")
    bad = run_kb("eval", "--queries", str(queries), "--qrels", str(qrels), data_dir=tmp_path)
    assert bad.returncode == 2 and f"{qrels}:2: expected TREC qrels" in bad.stderr, bad.stderr
    run = tmp_path / "saved.run"
    run.write_text("q1 Q0 a 1 2.0 t\nq1 Q0 b two 1.0 t\n", encoding="utf-8")
    qrels.write_text("q1 0 a 2\n", encoding="utf-8")
    bad = run_kb("eval", "--queries", str(queries), "--qrels", str(qrels), "--run", str(run), data_dir=tmp_path)
    assert bad.returncode == 2 and f"{run}:2: expected a TREC run" in bad.stderr, bad.stderr


def test_eval_compares_configs_side_by_side(loaded_data_dir, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"qid": "q1", "task": "geo-attr", "query": "杭州的人口"}\n'
                       '{"qid": "q2", "task": "geo-attr", "query": "东京在哪个时区"}\n', encoding="utf-8")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1 0 geo:city:1808926:人口 2\nq2 0 geo:city:1850147:时区 2\n", encoding="utf-8")
    text_only = REPO / "presets" / "bm25_only.yaml"
    result = run_kb("eval", "--queries", str(queries), "--qrels", str(qrels), "--config", str(REPO / "config.yaml"),
                    "--config", str(text_only), "--json", data_dir=loaded_data_dir)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [run["config"] for run in runs] == [str(REPO / "config.yaml"), str(text_only)]
    assert runs[0]["tasks"][0]["mrr10"] == 1.0
    assert set(runs[1]["per_query"]) == {"q1", "q2"} and set(runs[1]["per_query"]["q1"]) >= {"nDCG@10", "MRR@10"}
    compared = {(row["task"], row["measure"]): row for row in runs[1]["versus_first"]}
    assert 0.0 <= compared[("geo-attr", "nDCG@10")]["p_value"] <= 1.0
    saved = run_kb("eval", "--queries", str(queries), "--qrels", str(qrels), "--config", str(text_only),
                   "--save-runs", str(tmp_path / "runs"), data_dir=loaded_data_dir)
    assert saved.returncode == 0, saved.stderr
    again = run_kb("eval", "--queries", str(queries), "--qrels", str(qrels), "--run", str(tmp_path / "runs" /
                   "bm25_only.run"), "--config", str(text_only), "--json", data_dir=loaded_data_dir)
    replayed, live = json.loads(again.stdout)
    assert replayed["per_query"] == live["per_query"] == runs[1]["per_query"], "a saved run measures as it ran"
    assert all(row["p_value"] == 1.0 for row in live["versus_first"])


def test_review_backup_and_restore_through_the_cli(tmp_path, capital_kb_file):
    imported = run_kb("review", "import", str(capital_kb_file), "--approve", data_dir=tmp_path / "a")
    assert imported.returncode == 0, imported.stderr
    count = len(read_jsonl(capital_kb_file))
    backup = tmp_path / "review-backup.sqlite"
    saved = run_kb("review", "backup", str(backup), data_dir=tmp_path / "a")
    assert saved.returncode == 0 and saved.stdout.startswith(f"backed up {count} records")
    restored = run_kb("review", "restore", str(backup), data_dir=tmp_path / "b")
    assert restored.returncode == 0 and restored.stdout.startswith(f"restored {count} records")
    listed = run_kb("review", "list", data_dir=tmp_path / "b")
    assert f"approved: {count}" in listed.stdout
    refused = run_kb("review", "restore", str(capital_kb_file), data_dir=tmp_path / "b")
    assert refused.returncode == 2 and "not a review database backup" in refused.stderr
