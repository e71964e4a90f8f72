"""A build after a small change reuses the last build's work (its vectors, segmentations, name keys) and must
serve exactly what a full build of the same records from nothing serves."""

from __future__ import annotations

import logging
import sqlite3

import numpy as np
import pytest

from kb_service.ingest.embedding_cache import EmbeddingCache
from kb_service.ingest.loading import load_files
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.plan import Mode
from scoring.planner import SearchRequest
from tests.conftest import make_config, read_jsonl, sample_queries, write_jsonl


def _vectors(count: int, dims: int = 4) -> dict[str, np.ndarray]:
    rows = np.random.default_rng(3).standard_normal((count, dims)).astype(np.float32)
    return {f"h{i}": rows[i] for i in range(count)}


def _emptied_table(path) -> None:
    """Every vector gone from the cache's table, so what is still found can only come from the snapshot."""
    with sqlite3.connect(path) as table:
        table.execute("DELETE FROM vectors")


def test_the_last_builds_snapshot_answers_without_the_table(tmp_path):
    known = _vectors(5)
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite", "model-a", 4)
    cache.put_many(known)
    cache.remember(list(known), np.stack(list(known.values())))
    _emptied_table(tmp_path / "embeddings.sqlite")
    found = cache.get_many(["h3", "h0", "h9"])
    assert sorted(found) == ["h0", "h3"]
    assert np.array_equal(found["h3"], known["h3"]) and np.array_equal(found["h0"], known["h0"])
    other = EmbeddingCache(tmp_path / "embeddings.sqlite", "model-b", 4)
    assert other.get_many(["h0"]) == {}, "another encoder's snapshot must not answer"


def test_a_damaged_snapshot_is_ignored_and_the_table_still_answers(tmp_path, caplog):
    known = _vectors(3)
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite", "model-a", 4)
    cache.put_many(known)
    cache.remember(list(known), np.stack(list(known.values())))
    cache.snapshot.write_bytes(cache.snapshot.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        found = cache.get_many(list(known))
    assert all(np.array_equal(found[key], known[key]) for key in known)
    assert "ignoring the last build's snapshot" in caplog.text
    wrong_dims = EmbeddingCache(tmp_path / "embeddings.sqlite", "model-a", 8)
    wrong_dims.remember(["h0"], np.ones((1, 8), dtype=np.float32))
    assert cache.get_many(["h0"])["h0"].tolist() == known["h0"].tolist()


@pytest.fixture(scope="module")
def changed_kb(small_kb_file, tmp_path_factory):
    """400 records of the small KB, and the same with 40 values edited, one record removed and one added."""
    rows = read_jsonl(small_kb_file)[:400]
    edited = [{**row, "value": f"{row['value']}（修订）"} if i % 10 == 3 else row for i, row in enumerate(rows)]
    edited = [*edited[:-1], {**rows[0], "kid": "added:1", "attribute": "别名", "value": "新名字"}]
    folder = tmp_path_factory.mktemp("changed-kb")
    return write_jsonl(folder / "before.jsonl", rows), write_jsonl(folder / "after.jsonl", edited)


def _ranked(service: SearchService, queries: list[str], mode: Mode) -> list[list[tuple[str, float]]]:
    return [[(hit.record.kid, hit.score) for hit in service.search(SearchRequest(query=q, size=10, mode=mode)).hits]
            for q in queries]


def test_a_build_reusing_the_last_ones_work_serves_what_a_full_build_serves(changed_kb, tmp_path):
    before, after = changed_kb
    incremental = Runtime(make_config(tmp_path / "incremental", share_cache=False))
    load_files(incremental, [str(before)])
    _emptied_table(tmp_path / "incremental" / "cache" / "embeddings.sqlite")
    assert load_files(incremental, [str(after)]).encoded == 41, "only the edited and added records are encoded"
    full = Runtime(make_config(tmp_path / "full", share_cache=False))
    load_files(full, [str(after)])  # a cache of its own: every vector encoded now
    queries = [*sample_queries(after, 40), "新名字", "修订"]
    for mode in Mode:
        reused, rebuilt = (_ranked(SearchService(r), queries, mode) for r in (incremental, full))
        for query, mine, theirs in zip(queries, reused, rebuilt, strict=True):
            assert [kid for kid, _ in mine] == [kid for kid, _ in theirs], (mode, query)
            assert [s for _, s in mine] == pytest.approx([s for _, s in theirs], abs=1e-6), (mode, query)


def test_the_segmentation_cache_restores_a_segmenter_that_cuts_as_a_fresh_one(tmp_path):
    from kb_service.ingest.segment_cache import CachedSegmenter
    from query_understanding.segmenter import Segmenter

    names = ["画蛇添足", "杭州市余杭区", "一丁不识", "时区"]
    first = CachedSegmenter(tmp_path, names)
    first.segmented("画蛇添足的解释")
    first.save()
    again = CachedSegmenter(tmp_path, names)
    assert again.segmented("画蛇添足的解释") == first.segmented("画蛇添足的解释") and again.cut == 0
    texts = ["杭州市余杭区的时区是什么", "一丁不识和画蛇添足", "新的文本 with latin words"]
    fresh = Segmenter(names)
    assert [again.segmented(t) for t in texts] == [fresh.segmented(t) for t in texts]
    assert again.cut == len(texts) and again.segmenter.added_words() == fresh.added_words()
    other = CachedSegmenter(tmp_path, [*names, "余杭"])
    assert other.known == {}, "segmentations cut with other user words are not reused"
