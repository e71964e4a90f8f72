"""Disk and data faults: a data directory that fills up during a load, and a served version whose files were
damaged afterwards. The full disk is real (a small tmpfs mounted for the test, skipped where mounting is not
allowed); the damage is done to the real files of a real version."""

import json
import logging
import re
import subprocess
import uuid

import pytest

from kb_service.engines.embedded.version import VersionCorruptError
from kb_service.errors import StorageError
from kb_service.http.app import create_app
from kb_service.ingest.loading import load_files
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest
from tests.conftest import loaded, make_config


@pytest.fixture()
def small_disk(tmp_path):
    """A 2.5 MB file system: room for a tiny KB's version, not for a second, larger one."""
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2500k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_disk_during_a_load_is_a_clear_error_and_leaves_the_served_version(
        fault, small_disk, capital_kb_file, small_kb_file):
    config = make_config(small_disk / "data")
    load_files(Runtime(config), [str(capital_kb_file)])
    engine = Runtime(config).engine
    served = engine.current_name()
    before = SearchService(Runtime(config)).search(SearchRequest(query="哥伦比亚的首都")).hits
    reason = "(No space left on device|bytes left on its file system)"
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        reason = "Read-only file system"
    with pytest.raises(StorageError, match=f"{reason}.*still serving {served}") as refused:
        load_files(Runtime(config), [str(small_kb_file)])
    assert refused.value.field == "data_dir" and refused.value.http_status == 507
    assert engine.current_name() == served and [v.name for v in engine.versions()] == [served]
    assert not list(engine.versions_dir.glob(".building-*")), "the unfinished build must be removed"
    after = SearchService(Runtime(config)).search(SearchRequest(query="哥伦比亚的首都")).hits
    assert [h.record.kid for h in after] == [h.record.kid for h in before]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_version_is_refused_at_open_and_not_served(tmp_path, capital_kb_file, damage):
    data_dir = loaded(tmp_path / "data", capital_kb_file)
    engine = Runtime(make_config(data_dir)).engine
    name = engine.current_name()
    vectors = engine.path_of(name) / "vectors.npy"
    size = vectors.stat().st_size
    with open(vectors, "r+b") as handle:
        if damage == "truncate":
            handle.truncate(size // 2)
        else:
            handle.seek(size - 7)
            byte = handle.read(1)
            handle.seek(size - 7)
            handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(VersionCorruptError, match=f"version {name} is damaged: vectors.npy"):
        engine.open(name)
    service = SearchService(Runtime(make_config(data_dir)))
    assert service.unready_reason().startswith(
        f"no intact index version: version {name} cannot be served: version {name} is damaged: vectors.npy")
    assert service.fallback is None


def test_a_manifest_that_seals_no_files_is_refused(tmp_path, capital_kb_file):
    """A manifest whose file list was lost (or written by hand) verifies nothing, so the version is refused."""
    engine = Runtime(make_config(loaded(tmp_path / "data", capital_kb_file))).engine
    name = engine.current_name()
    manifest = engine.path_of(name) / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "files": {}}), encoding="utf-8")
    with pytest.raises(VersionCorruptError, match=f"version {name} is damaged: its manifest lists no files"):
        engine.open(name)


def _damage(engine, name: str) -> None:
    vectors = engine.path_of(name) / "vectors.npy"
    with open(vectors, "r+b") as handle:
        handle.truncate(vectors.stat().st_size // 2)


def test_a_damaged_or_unnamed_current_version_falls_back_to_the_newest_intact_one(tmp_path, capital_kb_file,
                                                                                    caplog):
    data_dir = loaded(tmp_path / "data", capital_kb_file)
    older = Runtime(make_config(data_dir)).engine.current_name()
    service = SearchService(Runtime(make_config(data_dir)))  # serving, when CURRENT moves to a version that is damaged
    with caplog.at_level(logging.ERROR, logger="kb_service.serving.service"):
        loaded(data_dir, capital_kb_file)
        engine = Runtime(make_config(data_dir)).engine
        newest = engine.current_name()
        _damage(engine, newest)
        for _ in range(5):  # the server's watcher asks every second: one log line, not one per second
            service.refresh()
    assert service.state.version.name == older
    assert service.fallback.wanted == newest and "is damaged: vectors.npy" in service.fallback.reason
    assert [r.getMessage() for r in caplog.records if "instead" in r.getMessage()] == [
        f"{service.fallback.reason}; serving {older} instead"]
    assert service.search(SearchRequest(query="哥伦比亚的首都")).hits

    started = SearchService(Runtime(make_config(data_dir)))  # starting with it: the newest intact version
    assert started.state.version.name == older and started.fallback.wanted == newest

    (data_dir / "embedded" / "CURRENT").write_text("garbage\n", encoding="utf-8")  # a pointer to nothing
    fresh = SearchService(Runtime(make_config(data_dir)))
    assert fresh.state.version.name == older and "CURRENT is missing" in fresh.fallback.reason

    (data_dir / "embedded" / "CURRENT").write_text(older, encoding="utf-8")  # put right: no fallback any more
    fresh.refresh()
    assert fresh.fallback is None and fresh.state.version.name == older


def test_readyz_names_the_fallback_and_a_metric_counts_it(tmp_path, capital_kb_file):
    data_dir = loaded(tmp_path / "data", capital_kb_file)
    loaded(data_dir, capital_kb_file)
    engine = Runtime(make_config(data_dir)).engine
    _damage(engine, engine.current_name())
    client = create_app(Runtime(make_config(data_dir)), watch=False).test_client()
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and "is damaged" in ready["fallback"]["reason"]
    assert ready["fallback"]["wanted"] == engine.current_name() != ready["index_version"]
    scraped = client.get("/metrics").get_data(as_text=True)
    assert re.search(r"^kb_version_fallback (1\.0|1)$", scraped, re.M)
    assert re.search(r"^kb_version_fallbacks_total [1-9]", scraped, re.M)
