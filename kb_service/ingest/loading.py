"""KB loading: files → validated records → vectors (through the cache) → a new index version → switch.

Nothing here touches the served version until the new one is complete on disk; any failure before the
switch leaves the data directory serving exactly what it served before.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kb_service.config import ServiceConfig
from kb_service.errors import InputError, StorageError
from kb_service.feedback.learning import approved_learning
from kb_service.ingest.embedding_cache import EmbeddingCache
from kb_service.ingest.encoders import Encoder, encoder_identity
from kb_service.ingest.readers import read_records
from kb_service.ingest.segment_cache import CachedSegmenter
from kb_service.progress import Progress
from kb_service.records import KnowledgeRecord, now_timestamp
from kb_service.runtime import Runtime
from query_understanding.dictionary import KbDictionary
from query_understanding.linking import pinyin_key
from query_understanding.segmenter import Segmenter
from query_understanding.understander import QueryUnderstander

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadReport:
    version: str
    records: int
    rejected: int
    replaced: int
    encoded: int
    reused: int
    seconds: float
    index_bytes: int
    reject_file: str | None

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**self.__dict__, "records_per_second": round(self.records_per_second, 1)}


def encode_with_cache(records: list[KnowledgeRecord], encoder: Encoder, cache: EmbeddingCache,
                      batch_size: int) -> tuple[np.ndarray, int]:
    """Vectors for every record, encoding only texts the cache has not seen; returns (vectors, encoded)."""
    hashes = [r.embedding_key() for r in records]
    known = cache.get_many(hashes)
    missing = {h: r.embedding_text() for h, r in zip(hashes, records, strict=True) if h not in known}
    progress = Progress("encoding", len(missing))
    pending = list(missing.items())
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        vectors = encoder.encode([text for _, text in batch])
        fresh = {h: v for (h, _), v in zip(batch, vectors, strict=True)}
        cache.put_many(fresh)
        known.update(fresh)
        progress.advance(len(batch))
    matrix = np.zeros((len(records), encoder.dims), dtype=np.float32)
    for row, key in enumerate(hashes):
        matrix[row] = known[key]
    cache.remember(hashes, matrix)
    return matrix, len(missing)


def cached_pinyin_keys(names: Iterable[str], cache: Path | None) -> dict[str, str]:
    """Fuzzy linking's pinyin keys of `names`; with a cache folder, names seen by an earlier build are not
    converted again (pypinyin takes seconds for a KB's tens of thousands of names)."""
    names = list(names)
    path = cache / "pinyin-keys.json" if cache else None
    known: dict[str, str | None] = {}
    if path and path.is_file():
        known = json.loads(path.read_text(encoding="utf-8"))
    missing = [name for name in names if name not in known]
    known.update({name: pinyin_key(name) for name in missing})
    if path and missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({n: known[n] for n in names}, ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, path)
    return {name: key for name in names if (key := known[name])}


def build_dictionary(records: list[KnowledgeRecord], alias_attributes: Iterable[str],
                     cache: Path | None = None) -> KbDictionary:
    """Query understanding's names for a version: entities, attributes, the aliases listed under
    `alias_attributes`, and the sampled name statistics and records entity linking learns from."""
    listing = set(alias_attributes)
    dictionary = KbDictionary.from_pairs(((r.knowledge, r.category) for r in records), {r.attribute for r in records},
                                         ((r.knowledge, r.value) for r in records if r.attribute in listing))
    dictionary = replace(dictionary, pinyin_keys=cached_pinyin_keys(dictionary.entity_names, cache))
    return dictionary.with_samples([(r.knowledge, r.attribute, r.value, r.category) for r in records])


def with_link_model(dictionary: KbDictionary, config: ServiceConfig, encoder: Encoder,
                    centroids: dict[str, np.ndarray], segmenter: Segmenter) -> KbDictionary:
    """The dictionary with its entity-link model fitted now, so that servers opening the version under the
    same settings skip the fit (1.5 s on the geo KB, in every worker after every reload)."""
    understander = QueryUnderstander(config.query_understanding, dictionary, segmenter,
                                     embed=lambda text: encoder.encode([text])[0], embed_many=encoder.encode,
                                     category_centroids=centroids, model_key=encoder_identity(config.encoder))
    return replace(dictionary, link_model=understander.stored_link_model())


def category_centroids(records: list[KnowledgeRecord], vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Each category's mean record vector, unit length: the category classifier's prototypes."""
    categories = sorted({r.category for r in records})
    position = {category: i for i, category in enumerate(categories)}
    category_of = np.array([position[r.category] for r in records])
    centroids = np.stack([vectors[category_of == i].mean(axis=0) for i in range(len(categories))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return dict(zip(categories, centroids.astype(np.float32), strict=True))


@dataclass(frozen=True)
class BuiltVersion:
    """A sealed version: its name, how many records were encoded afresh and its size in the engine."""

    name: str
    encoded: int
    index_bytes: int


def build_version(runtime: Runtime, records: list[KnowledgeRecord], switch: bool = True,
                  source: str = "") -> BuiltVersion:
    """Build and seal a version from validated records in the runtime's engine. The served version changes
    only at `switch`, after the new one is complete."""
    if not records:
        raise InputError(f"no records to load from {source or 'the input'}: nothing was changed", "records")
    config, encoder, engine = runtime.config, runtime.encoder, runtime.engine
    with _storage_errors(config, engine):
        cache = EmbeddingCache(config.paths.embeddings, encoder_identity(config.encoder),
                               encoder.dims)
        try:
            vectors, encoded = encode_with_cache(records, encoder, cache, config.encoder.batch_size)
        finally:
            cache.close()
        learned = approved_learning(runtime)
        dictionary = build_dictionary(records, config.query_understanding.alias_attributes,
                                      config.paths.cache).with_learned(learned.phrasings, learned.aliases)
        started = time.monotonic()
        centroids = category_centroids(records, vectors)
        segmenter = CachedSegmenter(config.paths.cache, dictionary.user_words())
        dictionary = with_link_model(dictionary, config, encoder, centroids, segmenter.segmenter)
        dictionary = replace(dictionary, segmenter_words=segmenter.segmenter.added_words())
        name = engine.build(records, vectors, segmenter.segmented, dictionary,
                           centroids, {
                               "records": len(records),
                               "encoder": encoder_identity(config.encoder),
                               "dims": encoder.dims,
                               "created": now_timestamp(),
                               "config_version": config.version,
                               "source": source,
                           })
        segmenter.save()
    log.info("version %s built in %.1fs (%s engine; %d texts segmented, %d from the segmentation cache)",
             name, time.monotonic() - started, config.engine.kind, segmenter.cut, segmenter.reused)
    if switch:
        engine.switch(name)
        engine.prune(config.engine.keep_versions)
    return BuiltVersion(name, encoded, engine.size_bytes(name))


STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}


@contextmanager
def _storage_errors(config: ServiceConfig, engine) -> Iterator[None]:
    """A full, read-only or forbidden data directory as a StorageError naming it and the version still
    served (the engine removed the unfinished build, so nothing is left behind)."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        short_write = isinstance(err, OSError) and err.errno is None and "written" in reason  # numpy's tofile
        if isinstance(err, OSError) and err.errno not in STORAGE_ERRNOS and not short_write:
            raise
        if short_write:
            reason = f"{reason} ({shutil.disk_usage(config.data_path).free:,} bytes left on its file system)"
        if isinstance(err, sqlite3.OperationalError) and not any(
                word in reason for word in ("disk is full", "readonly", "read-only", "unable to open")):
            raise
        served = engine.current_name()
        raise StorageError(f"cannot write the new version under {config.data_path}: {reason}; nothing was "
                           f"changed{f', still serving {served}' if served else ''}", "data_dir") from None


def load_files(runtime: Runtime, paths: list[str], quarantine: bool = False,
               reject_file: str | None = None, switch: bool = True) -> LoadReport:
    started = time.monotonic()
    result = read_records(paths, quarantine=quarantine)
    written_rejects = None
    if result.rejected:
        target = Path(reject_file or runtime.paths.rejects / f"rejects-{time.strftime('%Y%m%dT%H%M%S')}.jsonl")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            for rejected in result.rejected:
                handle.write(json.dumps(rejected.to_dict(), ensure_ascii=False) + "\n")
        written_rejects = str(target)
        log.warning("%d line(s) quarantined to %s", len(result.rejected), target)
    built = build_version(runtime, result.records, switch=switch, source=", ".join(map(str, paths)))
    return LoadReport(
        version=built.name,
        records=len(result.records),
        rejected=len(result.rejected),
        replaced=result.replaced,
        encoded=built.encoded,
        reused=len(result.records) - built.encoded,
        seconds=time.monotonic() - started,
        index_bytes=built.index_bytes,
        reject_file=written_rejects,
    )
