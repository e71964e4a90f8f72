"""A small KB with varied filterable fields (confidence, flags, timestamps, refs, expiry, two categories), built
from the demo's GeoNames cities, and the filter expressions the search API tests run on every engine with a
Python predicate that states what each must keep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import write_jsonl

MARKUP = " <i>&</i>"
CATEGORY_OF = {"坐标": "地理", "时区": "地理"}  # the rest stay 城市


def varied_rows(cities_file: Path, count: int = 300) -> list[dict]:
    """`count` demo records given a spread of confidences (some null), verified flags, update times over a
    year, refs (some empty), two categories and a few expired or expiring records."""
    import gzip
    import json

    with gzip.open(cities_file, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:count]
    for n, row in enumerate(rows):
        row["category"] = CATEGORY_OF.get(row["attribute"], "城市")
        row["confidence"] = None if n % 7 == 0 else round((n * 37 % 100) / 100, 2)
        row["expert_verified"] = int(n % 3 == 0)
        row["update_timestamp"] = f"2026-{1 + n % 12:02d}-{1 + n % 28:02d} {n % 24:02d}:00:00"
        row["ref"] = "" if n % 5 == 0 else f"batch-{n % 4}"
        row["expires_at"] = "2020-01-01 00:00:00" if n % 50 == 1 else ("2099-01-01 00:00:00" if n % 50 == 2 else "")
    marked = next(row for row in rows if row["attribute"] == "英文名")
    marked["value"] += MARKUP  # markup in a record, which a highlight must escape
    return rows


def write_varied_kb(cities_file: Path, directory: Path) -> tuple[Path, list[dict]]:
    rows = varied_rows(cities_file)
    return write_jsonl(directory / "varied.jsonl", rows), rows


def servable(rows: list[dict]) -> list[dict]:
    """The rows a search may return: not expired (none is deleted or unavailable here)."""
    return [r for r in rows if r["expires_at"] != "2020-01-01 00:00:00"]


Predicate = Callable[[dict], bool]
FILTER_CASES: list[tuple[str, list[dict], Predicate]] = [
    ("term", [{"term": {"attribute": "人口"}}], lambda r: r["attribute"] == "人口"),
    ("terms", [{"terms": {"category": ["地理"]}}, {"terms": {"ref": ["batch-1", "batch-2"]}}],
     lambda r: r["category"] == "地理" and r["ref"] in ("batch-1", "batch-2")),
    ("flag", [{"term": {"expert_verified": True}}], lambda r: r["expert_verified"] == 1),
    ("range number", [{"range": {"confidence": {"gte": 0.5, "lt": 0.8}}}],
     lambda r: r["confidence"] is not None and 0.5 <= r["confidence"] < 0.8),
    ("range date", [{"range": {"update_timestamp": {"gt": "2026-06-30", "lte": "2026-09-15 00:00:00"}}}],
     lambda r: "2026-06-30 00:00:00" < r["update_timestamp"] <= "2026-09-15 00:00:00"),
    ("exists", [{"exists": {"field": "confidence"}}, {"exists": {"field": "ref"}}],
     lambda r: r["confidence"] is not None and r["ref"] != ""),
    ("must_not exists", [{"bool": {"must_not": [{"exists": {"field": "expires_at"}}]}}],
     lambda r: r["expires_at"] == ""),
    ("bool", [{"bool": {"should": [{"term": {"attribute": "国家"}}, {"range": {"confidence": {"gt": 0.9}}}],
                        "must_not": [{"term": {"expert_verified": 1}}]}}],
     lambda r: (r["attribute"] == "国家" or (r["confidence"] or 0) > 0.9) and not r["expert_verified"]),
    ("nested bool", [{"bool": {"must": [{"bool": {"should": [{"term": {"category": "地理"}},
                                                             {"term": {"attribute": "英文名"}}]}}],
                               "must_not": [{"bool": {"must": [{"exists": {"field": "ref"}},
                                                               {"term": {"ref": "batch-3"}}]}}]}}],
     lambda r: (r["category"] == "地理" or r["attribute"] == "英文名") and r["ref"] != "batch-3"),
]
