"""Record validation and file reading: every bad line is named with file, line and field; nothing half-loads."""

import gzip

import pytest

from kb_service.ingest.readers import KnowledgeFileError, read_records
from kb_service.records import KnowledgeRecord, RecordError
from tests.conftest import write_jsonl

GOOD = {"kid": "k1", "knowledge": "杭州", "attribute": "人口", "value": "9236032", "category": "城市",
        "confidence": 0.9, "ref": "geonames#1808926", "available": 1, "del": 0,
        "create_timestamp": "2026-01-01 00:00:00", "update_timestamp": "2026-01-01 00:00:00"}


@pytest.mark.parametrize(("change", "field"), [
    ({"kid": None}, "kid"),
    ({"knowledge": "  "}, "knowledge"),
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": "high"}, "confidence"),
    ({"confidence": True}, "confidence"),
    ({"del": 2}, "del"),
    ({"available": "yes"}, "available"),
    ({"update_timestamp": "yesterday"}, "update_timestamp"),
    ({"colour": "red"}, "colour"),
    ({"attribute": ["a"]}, "attribute"),
])
def test_invalid_field_is_named(change, field):
    with pytest.raises(RecordError) as caught:
        KnowledgeRecord.from_mapping({**GOOD, **change})
    assert caught.value.field == field


def test_loose_input_is_normalised():
    record = KnowledgeRecord.from_mapping({**GOOD, "confidence": "", "del": "1", "value": 42,
                                           "update_timestamp": "2026-02-03T04:05:06"})
    assert record.confidence is None
    assert record.deleted == 1
    assert record.value == "42"
    assert record.update_timestamp == "2026-02-03 04:05:06"
    assert record.to_dict()["del"] == 1


def test_bad_lines_fail_the_whole_file_with_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "kb.jsonl", [GOOD, {**GOOD, "kid": "k2", "confidence": 7}])
    with path.open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    with pytest.raises(KnowledgeFileError) as caught:
        read_records([path])
    message = str(caught.value)
    assert f"{path}:2: field 'confidence'" in message
    assert f"{path}:3: field '<line>': invalid JSON" in message
    assert [r.line for r in caught.value.rejected] == [2, 3]


def test_quarantine_keeps_the_good_lines(tmp_path):
    path = write_jsonl(tmp_path / "kb.jsonl.gz", [GOOD, {**GOOD, "kid": "k2", "del": 5}, {**GOOD, "kid": "k3"}])
    result = read_records([path], quarantine=True)
    assert [r.kid for r in result.records] == ["k1", "k3"]
    assert [(r.line, r.field) for r in result.rejected] == [(2, "del")]


def test_csv_and_gzip_csv(tmp_path):
    header = ",".join(GOOD)
    row = ",".join(str(v) for v in GOOD.values())
    (tmp_path / "kb.csv").write_text(f"{header}\n{row}\n", encoding="utf-8")
    with gzip.open(tmp_path / "kb2.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write(f"{header}\n{row.replace('k1', 'k2')}\n")
    result = read_records([tmp_path / "kb.csv", tmp_path / "kb2.csv.gz"])
    assert [(r.kid, r.confidence) for r in result.records] == [("k1", 0.9), ("k2", 0.9)]


def test_csv_row_with_extra_columns_is_rejected(tmp_path):
    (tmp_path / "kb.csv").write_text("kid,knowledge,attribute,value,category\nk1,a,b,c,d,EXTRA\n", encoding="utf-8")
    with pytest.raises(KnowledgeFileError, match=r"kb.csv:2: field '<line>': more columns"):
        read_records([tmp_path / "kb.csv"])


def test_duplicate_kid_needs_a_newer_update(tmp_path):
    newer = {**GOOD, "value": "9300000", "update_timestamp": "2026-06-01 00:00:00"}
    result = read_records([write_jsonl(tmp_path / "a.jsonl", [GOOD, newer])])
    assert [(r.kid, r.value) for r in result.records] == [("k1", "9300000")]
    assert result.replaced == 1
    with pytest.raises(KnowledgeFileError, match=r"duplicate of .*a2\.jsonl:1"):
        read_records([write_jsonl(tmp_path / "a2.jsonl", [GOOD, GOOD])])


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "kb.xml").write_text("<kb/>")
    with pytest.raises(KnowledgeFileError, match="unknown format"):
        read_records([tmp_path / "kb.xml"])
    with pytest.raises(KnowledgeFileError, match="no such file"):
        read_records([tmp_path / "absent.jsonl"])


def test_quarantine_with_no_valid_line_left_still_fails(tmp_path):
    path = write_jsonl(tmp_path / "kb.jsonl", [{**GOOD, "del": 7}])
    with pytest.raises(KnowledgeFileError, match=r"kb\.jsonl:1: field 'del'"):
        read_records([path], quarantine=True)
