"""Reviewed, gated reloads on the embedded engine with the real encoder and a real SQLite review database:
the review flow, each gate refusing, expiry, the quality pass, a reload killed mid-build, searches across
the switch, rollback, the scheduler and the admin API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from kb_service.http.app import create_app
from kb_service.ingest.readers import read_records
from kb_service.records import KnowledgeRecord
from kb_service.reload.review import ReviewDatabase, ReviewError
from kb_service.reload.run import (
    ReloadBusyError,
    ReloadRefusedError,
    RollbackError,
    history_of,
    reload_lock,
    rollback,
    run_reload,
)
from kb_service.reload.schedule import build_scheduler
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest
from tests.conftest import REPO, config_text, make_config, review_database, searching_in_background, write_jsonl

HANGZHOU_POPULATION = "geo:city:1808926:人口"


def _config(data_dir, *replacements, share_cache: bool = True):
    """`share_cache` off for tests that count what each run encodes: they need a cache of their own."""
    return make_config(data_dir, *replacements, share_cache=share_cache)


def _served_records(config) -> int:
    store = Runtime(config).engine
    return next(v for v in store.versions() if v.current).manifest["records"]


def test_nothing_approved_is_refused_and_nothing_served(tmp_path, small_kb_file):
    config = _config(tmp_path / "data")
    database = review_database(config)
    database.import_records(read_records([str(small_kb_file)]).records)
    with pytest.raises(ReloadRefusedError, match="min_records"):
        run_reload(Runtime(config))
    assert Runtime(config).engine.current_name() is None
    assert history_of(Runtime(config)).runs()[0].status == "refused"
    with pytest.raises(ReviewError, match="no record with kid"):
        database.set_status(["no-such-kid"], "approved", "alice")


def test_review_flow_reload_counts_and_the_changed_records_only_are_encoded(reviewed_cold, small_kb_file):
    config, database = reviewed_cold
    first = run_reload(Runtime(config))
    assert first.status == "succeeded" and first.counts.added == first.counts.records > 1000
    assert first.counts.encoded == first.counts.records
    assert _served_records(config) == first.counts.records
    records = read_records([str(small_kb_file)]).records
    edited = [replace(r, value=r.value + "（修订）") for r in records[:15]]
    assert database.import_records(edited).changed == 15
    pending_out = run_reload(Runtime(config))
    assert (pending_out.counts.removed, pending_out.counts.encoded) == (15, 0)
    database.set_status([r.kid for r in edited], "approved", "bob")
    back = run_reload(Runtime(config))
    assert (back.counts.added, back.counts.updated, back.counts.removed) == (15, 0, 0)
    assert back.counts.encoded == 15 and back.counts.reused == back.counts.records - 15
    runs = history_of(Runtime(config)).runs()
    assert [r.status for r in runs[:3]] == ["succeeded"] * 3 and runs[0].version == back.version


def test_removed_ratio_gate_refuses_and_force_overrides(reviewed):
    config, database = reviewed
    served = run_reload(Runtime(config)).version
    kids = [row["kid"] for row in database.listing("approved", limit=10_000)]
    database.set_status(kids[: len(kids) * 3 // 10], "rejected", "carol")
    with pytest.raises(ReloadRefusedError, match="removed_ratio") as refused:
        run_reload(Runtime(config))
    assert refused.value.run.version is None
    assert Runtime(config).engine.current_name() == served
    forced = run_reload(Runtime(config), force=True)
    assert forced.status == "succeeded" and Runtime(config).engine.current_name() == forced.version
    assert "overridden" in forced.message


def test_canary_gate_refuses_a_version_that_loses_the_expected_answer(tmp_path, reviewed):
    config, database = reviewed
    canary = ("  canaries: []", f'  canaries: [{{query: 杭州的人口, kid: "{HANGZHOU_POPULATION}", top_k: 3}}]')
    config = _config(config.data_path, canary)
    served = run_reload(Runtime(config))
    assert any(g.gate.startswith("canary") and g.passed for g in served.gates)
    database.set_status([HANGZHOU_POPULATION], "rejected", "dave")
    with pytest.raises(ReloadRefusedError, match="canary") as refused:
        run_reload(Runtime(config))
    assert Runtime(config).engine.current_name() == served.version
    refused_version = refused.value.run.version
    assert refused_version and refused_version not in {v.name for v in Runtime(config).engine.versions()}


def test_expired_records_leave_at_the_next_reload(tmp_path):
    soon = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 2))
    base = {"category": "城市", "confidence": 0.9, "update_timestamp": "2026-01-01 00:00:00"}
    rows = [{**base, "kid": f"k{i}", "knowledge": f"城{i}", "attribute": "人口", "value": str(i)} for i in range(9)]
    rows.append({**base, "kid": "hot", "knowledge": "热点", "attribute": "事件", "value": "快讯", "expires_at": soon})
    config = _config(tmp_path / "data", ("  max_removed_ratio: 0.2", "  max_removed_ratio: 0.5"))
    database = review_database(config)
    database.import_records(read_records([str(write_jsonl(tmp_path / "kb.jsonl", rows))]).records,
                            status="approved", reviewer="import")
    assert run_reload(Runtime(config)).counts.records == 10
    time.sleep(max(0.0, time.mktime(time.strptime(soon, "%Y-%m-%d %H:%M:%S")) - time.time() + 1.1))
    after = run_reload(Runtime(config))
    assert (after.counts.records, after.counts.expired, after.counts.removed) == (9, 1, 1)
    assert SearchService(Runtime(config)).get("hot") is None


def test_a_row_changed_behind_the_review_tools_is_validated_again_even_after_a_served_reload(reviewed):
    """Rows the last reload validated and served are trusted by their content hash; one edited in the
    database directly no longer has that hash, so the schema checks it again and the reload stops."""
    import sqlite3

    from kb_service.records import RecordError

    config, database = reviewed
    first = run_reload(Runtime(config))
    kid = database.listing("approved", limit=1)[0]["kid"]
    with sqlite3.connect(config.reload.database_url(config.paths).removeprefix("sqlite:///")) as connection:
        connection.execute("UPDATE knowledge_review SET confidence = 7 WHERE kid = ?", (kid,))
    with pytest.raises(RecordError) as refused:
        run_reload(Runtime(config))
    assert refused.value.field == "confidence"
    assert Runtime(config).engine.current_name() == first.version


def test_the_quality_pass_merges_within_an_entity_and_attribute_only_and_keeps_input_order():
    from kb_service.ingest.quality import Merge, merge_near_duplicates

    def record(kid: str, knowledge: str, attribute: str, value: str, confidence: float) -> KnowledgeRecord:
        return KnowledgeRecord(kid, knowledge, attribute, value, "城市", confidence=confidence)

    records = [record("a", "杭州", "人口", "1000万", 0.5), record("b", "上海", "人口", "1000万", 0.9),
               record("c", "杭州", "的人口", "1000 万", 0.8), record("d", "杭州", "人口", "900万", 0.1),
               record("e", "杭州 ", "人口。", "1000万！", 0.6)]
    kept, merges = merge_near_duplicates(records, "的")
    assert [r.kid for r in kept] == ["b", "c", "d"], "a and e say what c says; b is another city"
    assert merges == [Merge(kept="c", dropped="a"), Merge(kept="c", dropped="e")]


def test_quality_pass_merges_particle_only_duplicates_keeping_the_expert_record(tmp_path):
    base = {"category": "城市", "update_timestamp": "2026-01-01 00:00:00"}
    rows = [
        {**base, "kid": "model", "knowledge": "杭州", "attribute": "的人口", "value": "1,000万", "confidence": 0.9},
        {**base, "kid": "expert", "knowledge": "杭州", "attribute": "人口", "value": "1000万", "confidence": 0.6,
         "expert_verified": 1},
        {**base, "kid": "other", "knowledge": "杭州", "attribute": "面积", "value": "16850", "confidence": 0.5},
    ]
    config = _config(tmp_path / "data")
    review_database(config).import_records(read_records([str(write_jsonl(tmp_path / "kb.jsonl", rows))]).records,
                                     status="approved", reviewer="import")
    run = run_reload(Runtime(config))
    assert (run.counts.records, run.counts.merged) == (2, 1)
    service = SearchService(Runtime(config))
    assert service.get("expert") is not None and service.get("model") is None


def test_a_reload_killed_mid_build_leaves_the_served_version_and_the_next_one_succeeds(tmp_path, reviewed):
    config, database = reviewed
    served = run_reload(Runtime(config)).version
    edited = [replace(r, value=r.value + "!")
              for r in read_records([str(_export(tmp_path, database))]).records[:50]]
    database.import_records(edited, status="approved", reviewer="erin")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config_text(("data_dir: data", f"data_dir: {config.data_path}")), encoding="utf-8")
    versions_dir = config.paths.embedded / "versions"
    process = subprocess.Popen([sys.executable, "-m", "kb_service.cli", "--config", str(config_path), "reload"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 120
    while not list(versions_dir.glob(".building-*")):
        assert process.poll() is None, "the reload finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert Runtime(config).engine.current_name() == served
    assert SearchService(Runtime(config)).search(SearchRequest(query="杭州的人口")).hits
    assert history_of(Runtime(config)).runs()[0].status == "running"
    recovered = run_reload(Runtime(config))
    assert recovered.status == "succeeded" and recovered.counts.updated == 50
    statuses = [r.status for r in history_of(Runtime(config)).runs()]
    assert statuses[:2] == ["succeeded", "crashed"]
    assert not list(versions_dir.glob(".building-*"))


def _export(tmp_path, database: ReviewDatabase):
    rows = database.listing("approved", limit=100)
    return write_jsonl(tmp_path / "export.jsonl", [
        {k: v for k, v in row.items() if k not in ("status", "reviewer", "reviewed_at", "imported_at")
         and v is not None} for row in rows])


def test_searches_across_reloads_and_a_rollback_all_succeed_from_one_version_each(reviewed):
    config, database = reviewed
    first = run_reload(Runtime(config)).version
    with searching_in_background(SearchService(Runtime(config)), "上海的人口", threads=4) as load:
        kids = [row["kid"] for row in database.listing("approved", limit=50)]
        database.set_status(kids, "rejected", "frank")
        second = run_reload(Runtime(config)).version
        _wait_for(lambda: second in load.versions)  # a busy machine may not have searched the new one yet
        done = rollback(Runtime(config))
        assert (done.serving, done.previous) == (first, second)
        searched = load.count
        _wait_for(lambda: load.count > searched + 20)
    print(f"{load.count} searches across a reload and a rollback, {len(load.errors)} errors")
    assert load.errors == [] and load.count > 20 and load.versions == {first, second}
    with pytest.raises(RollbackError, match="no complete version"):
        rollback(Runtime(config), "v999999")


def test_scheduler_runs_reloads_and_records_overlaps_as_skipped(reviewed):
    config, _ = reviewed
    config = _config(config.data_path, ("  interval_minutes: null", "  interval_minutes: 0.01"))
    with reload_lock(Runtime(config).engine):
        with pytest.raises(ReloadBusyError):
            run_reload(Runtime(config))
        scheduler = build_scheduler(Runtime(config))
        scheduler.start()
        try:
            _wait_for(lambda: any(r.status == "skipped" for r in history_of(Runtime(config)).runs()))
        finally:
            scheduler.shutdown(wait=True)
    scheduler = build_scheduler(Runtime(config))
    scheduler.start()
    try:
        _wait_for(lambda: any(r.status == "succeeded" and r.trigger == "schedule"
                              for r in history_of(Runtime(config)).runs()))
    finally:
        scheduler.shutdown(wait=True)
    assert Runtime(config).engine.current_name() is not None


def _wait_for(condition, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_admin_api_runs_reloads_lists_history_and_rolls_back(reviewed):
    from kb_service.http.auth import new_key

    config, database = reviewed
    key, digest = new_key()
    config = _config(config.data_path, ("  admin_key_sha256: []", f"  admin_key_sha256: [{digest}]"))
    first = run_reload(Runtime(config)).version
    client = create_app(Runtime(config), SearchService(Runtime(config)), watch=False).test_client()
    headers = {"X-API-Key": key}
    assert client.post("/admin/reload", json={"wait": True}).status_code == 401
    database.set_status([row["kid"] for row in database.listing("approved", limit=5)], "rejected", "gina")
    done = client.post("/admin/reload", json={"wait": True}, headers=headers)
    assert done.status_code == 200, done.get_json()
    second = done.get_json()["version"]
    assert done.get_json()["counts"]["removed"] == 5 and done.get_json()["trigger"].startswith("api:")
    runs = client.get("/admin/reloads", headers=headers).get_json()["runs"]
    assert runs[0]["version"] == second and runs[0]["status"] == "succeeded"
    versions = client.get("/admin/versions", headers=headers).get_json()["versions"]
    assert [v["name"] for v in versions if v["current"]] == [second]
    back = client.post("/admin/rollback", json={}, headers=headers)
    assert back.get_json() == {"serving": first, "previous": second, "by": back.get_json()["by"]}
    assert client.get("/readyz").get_json()["index_version"] == first
    bad = client.post("/admin/reload", json={"wait": "maybe"}, headers=headers)
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "wait"


@pytest.mark.slow
def test_idioms_end_to_end_scheduled_full_reload_then_one_percent_change(tmp_path):
    """The acceptance run: the idiom KB imported into the review database and approved, a scheduled reload
    (cold embedding cache) builds and switches it; then 1 % of the records change and reload again."""
    from tests.conftest import shared_file

    kb_file = shared_file("idioms", "kb.jsonl.gz")
    config = _config(tmp_path / "data", ("  interval_minutes: null", "  interval_minutes: 0.01"), share_cache=False)
    database = review_database(config)
    records = read_records([str(kb_file)]).records
    started = time.monotonic()
    database.import_records(records)
    database.set_status(None, "approved", "expert")
    imported_s = time.monotonic() - started
    scheduler = build_scheduler(Runtime(config))
    scheduler.start()
    try:
        _wait_for(lambda: any(r.status == "succeeded" for r in history_of(Runtime(config)).runs()), seconds=1800)
    finally:
        scheduler.shutdown(wait=True)
    full = next(r for r in reversed(history_of(Runtime(config)).runs()) if r.status == "succeeded")
    assert full.trigger == "schedule" and full.counts.encoded == full.counts.records
    changed = [replace(r, value=r.value + "（专家修订）") for r in records[::100]]
    assert database.import_records(changed, status="approved", reviewer="expert").changed == len(changed)
    partial = run_reload(Runtime(config))
    # an edited record no longer merges with its near-duplicate, which then comes back as added
    assert partial.counts.updated == len(changed) and partial.counts.removed == 0
    assert partial.counts.encoded == len(changed) + partial.counts.added
    print(f"\nidioms: import+approve {len(records)} records {imported_s:.1f}s; scheduled full reload "
          f"{full.duration_s:.1f}s ({full.counts.records} records, merged {full.counts.merged}); "
          f"1% change ({len(changed)} records) reload {partial.duration_s:.1f}s: "
          f"{full.duration_s / partial.duration_s:.1f}x faster, encoded {partial.counts.encoded}, "
          f"reused {partial.counts.reused} ({partial.counts.reused / partial.counts.records:.1%})")
    assert SearchService(Runtime(config)).get(changed[0].kid).value.endswith("（专家修订）")


def test_a_restored_backup_serves_identical_search_results(reviewed, tmp_path):
    config, database = reviewed
    database.set_status([row["kid"] for row in database.listing("approved", limit=40)], "rejected", "carol")
    backup = tmp_path / "backups" / "review.sqlite"
    assert database.backup(backup) == sum(database.counts().values())
    elsewhere = _config(tmp_path / "elsewhere")
    restored = review_database(elsewhere)
    assert restored.restore(backup) == sum(database.counts().values())
    assert restored.counts() == database.counts()
    assert restored.listing(limit=10_000) == database.listing(limit=10_000)
    run_reload(Runtime(config)), run_reload(Runtime(elsewhere))
    original, copy = SearchService(Runtime(config)), SearchService(Runtime(elsewhere))
    for query in ("杭州的人口", "东京", "上海在哪个时区"):
        assert ([h.record.kid for h in copy.search(SearchRequest(query=query, size=10)).hits]
                == [h.record.kid for h in original.search(SearchRequest(query=query, size=10)).hits])
    restored.close()


def test_a_file_that_is_not_a_backup_changes_nothing(reviewed, tmp_path):
    _, database = reviewed
    before = database.counts()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ReviewError, match="not a review database backup"):
        database.restore(junk)
    with pytest.raises(ReviewError, match="no such file"):
        database.restore(tmp_path / "missing.sqlite")
    assert database.counts() == before
