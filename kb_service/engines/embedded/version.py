"""One embedded version: writes its files and executes search plans against them.

Execution mirrors Elasticsearch's `script_score` over a filtered bool query: filters select candidates,
the should clauses sum into a BM25 `_score`, and the formula from scoring/ is evaluated with numpy on every
candidate (`exact` mode), or only on the union of the text and vector top-N (`fast` mode).
"""

from __future__ import annotations

import json
import mmap
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import orjson
import xxhash

from kb_service.config import EngineConfig
from kb_service.engines.base import EngineResult, VersionUnusableError
from kb_service.engines.embedded.columns import KeywordColumn
from kb_service.engines.embedded.lines import MappedLines
from kb_service.engines.embedded.text_index import FieldTextIndex, Postings
from kb_service.engines.embedded.vector_index import VectorIndex
from kb_service.progress import Progress
from kb_service.records import KnowledgeRecord, epoch_seconds
from query_understanding.dictionary import KbDictionary
from scoring.candidate_scoring import formula_variables, nonzero_details, top_hits
from scoring.formula import Formula
from scoring.plan import (
    FLAG_FIELDS,
    KEYWORD_FIELDS,
    TEXT_FIELD_SOURCES,
    TEXT_FIELDS,
    BoolFilter,
    Clause,
    ExistsFilter,
    Filter,
    Mode,
    NotExpiredFilter,
    RangeFilter,
    SearchPlan,
    SortKey,
    TermFilter,
)
from scoring.sorting import order_key

INDEX_FORMAT = 9  # bumped whenever a file is added, renamed or laid out differently: older versions are refused
MANIFEST = "manifest.json"  # the files of a version, each named once: the writer and the reader use these
RECORDS = "records.jsonl"
VECTORS = "vectors.npy"
CENTROIDS = "category_centroids.npy"
DICTIONARY = "dictionary.json"
NUMBER_FILES = {"confidence": "confidence", "create_timestamp": "created", "update_timestamp": "updated",
                "expires_at": "expires"}  # number and date columns (dates as epoch seconds), NaN where empty
CACHED_FILTER_MASKS = 16
RECORDS_CACHED = 4096  # parsed records kept per version (the hits of recent searches)
ZERO = np.float32(0)
GATHER_BELOW = 4  # cosines of fewer than 1/4 of the records: gather their rows; more: one product over all

def _top(documents: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """The `count` best of `documents` by `scores` (indexed by document)."""
    if documents.size <= count:
        return documents
    return documents[np.argpartition(-scores[documents], count - 1)[:count]]


def _summed(parts: list[Postings], docs: np.ndarray, base: np.float32 = ZERO) -> np.ndarray:
    """Each of `docs`'s text score: `base` and its scores in `parts` added in clause order, as the dense sum
    adds them, so both paths give the same float32 and rank ties alike."""
    total = np.full(docs.size, base, dtype=np.float32)
    for part in parts:
        total += part.scores_of(docs)
    return total


def _text_top(parts: list[Postings], mask: np.ndarray, count: int) -> np.ndarray:
    """The `count` documents passing `mask` with the highest text score (the sum over `parts`)."""
    dense = np.zeros(mask.size, dtype=np.float32)
    for part in parts:
        dense[part.docs] += part.scores
    return _top(np.flatnonzero((dense > 0) & mask), dense, count)


def write_version(directory: Path, records: list[KnowledgeRecord], vectors: np.ndarray, segmented: Callable[[str], str],
                dictionary: KbDictionary, centroids: dict[str, np.ndarray], engine: EngineConfig) -> None:
    """Write every file of a version into `directory` (a build folder the version store will seal)."""
    stored = [record.to_dict() for record in records]
    with open(directory / RECORDS, "wb") as handle:
        handle.writelines(orjson.dumps(row) + b"\n" for row in stored)
    np.save(directory / VECTORS, np.ascontiguousarray(vectors, dtype=np.float32))
    for flag in FLAG_FIELDS:
        np.save(directory / f"{flag}.npy", np.fromiter((row[flag] for row in stored), dtype=np.int8, count=len(stored)))
    np.save(directory / "confidence.npy",
            np.array([np.nan if r.confidence is None else r.confidence for r in records], dtype=np.float32))
    for field, name in NUMBER_FILES.items():
        if field != "confidence":
            np.save(directory / f"{name}.npy", np.array([epoch_seconds(getattr(r, field)) for r in records],
                                                        dtype=np.float64))
    for name in KEYWORD_FIELDS:
        KeywordColumn.build([getattr(r, name) for r in records]).save(directory, name)
    for field, source in TEXT_FIELD_SOURCES.items():
        texts = []
        progress = Progress(f"segmenting {field}", len(records))
        for record in records:
            texts.append(segmented(getattr(record, source)))
            progress.advance(1)
        FieldTextIndex.build(texts, k1=engine.bm25_k1, b=engine.bm25_b).save(directory / "text" / field)
    if len(records) >= engine.ann_min_records:
        VectorIndex.build(vectors, directory, engine.ann_subquantizers, engine.ann_partitions)
    np.save(directory / CENTROIDS, np.stack(list(centroids.values())))
    (directory / DICTIONARY).write_bytes(orjson.dumps({**dictionary.to_json(), "centroid_categories": list(centroids)}))


class IndexFormatError(VersionUnusableError):
    """A version written by another release of the engine; it must be rebuilt with `kb load`."""


class VersionCorruptError(VersionUnusableError):
    """A version whose files no longer match the sizes and checksums sealed in its manifest (a truncated or
    overwritten file): it is refused rather than served with wrong answers."""


DIGEST = "xxh3_128"


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        if not path.stat().st_size:
            return xxhash.xxh3_128().hexdigest()
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return xxhash.xxh3_128(mapped).hexdigest()


def file_digests(directory: Path) -> dict[str, dict]:
    """Size and XXH3-128 digest of every file of a version folder but its manifest, by relative path. XXH3
    reads a mapped file at memory speed (3.5 GiB in about a second here, SHA-256 took 3.6 s), so every open
    can afford to check every byte; it detects damage, it is not a defence against a forger, who could
    rewrite the manifest too."""
    return {path.relative_to(directory).as_posix(): {"bytes": path.stat().st_size, DIGEST: _digest(path)}
            for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)}


def verify_files(directory: Path, sealed: dict[str, dict]) -> None:
    """Raises VersionCorruptError naming the first file that is missing, resized or altered."""
    name = directory.name
    if not sealed:
        raise VersionCorruptError(f"version {name} is damaged: its manifest lists no files; not serving it "
                                  "(`kb rollback` serves an earlier version)")
    for relative, expected in sealed.items():
        path = directory / relative
        if not path.is_file():
            raise VersionCorruptError(f"version {name} is damaged: {relative} is missing; not serving it "
                                      "(`kb rollback` serves an earlier version)")
        if path.stat().st_size != expected["bytes"]:
            raise VersionCorruptError(f"version {name} is damaged: {relative} has {path.stat().st_size} bytes, "
                                      f"{expected['bytes']} were written; not serving it (`kb rollback` serves an "
                                      "earlier version)")
    for relative, expected in sealed.items():
        if _digest(directory / relative) != expected.get(DIGEST):
            raise VersionCorruptError(f"version {name} is damaged: {relative} does not match its checksum; not "
                                      "serving it (`kb rollback` serves an earlier version)")


def _read_record(stored: MappedLines, index: int) -> KnowledgeRecord:
    """Record `index` parsed from its line of the memory-mapped records.jsonl: only hits are ever read, so
    opening a version costs nothing per record and worker processes share the file's pages."""
    return KnowledgeRecord.from_stored(orjson.loads(stored[index]))


class EmbeddedVersion:
    """A version's files opened for searching: columns in memory, vectors and BM25 postings memory-mapped."""

    def __init__(self, directory: Path, engine: EngineConfig):
        self.directory = Path(directory)
        self.name = self.directory.name
        self.manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        if self.manifest.get("format") != INDEX_FORMAT:
            raise IndexFormatError(f"version {self.name} has index format {self.manifest.get('format')}, this "
                                   f"release reads format {INDEX_FORMAT}: rebuild it with `kb load`")
        verify_files(self.directory, self.manifest.get("files", {}))
        self.k1 = engine.bm25_k1
        self.overfetch = engine.ann_overfetch
        self.ann = VectorIndex.load(self.directory, engine.ann_probes)
        self._stored = MappedLines(self.directory / RECORDS)
        # the cache wraps a function of the lines, not a bound method: a version must not reference itself,
        # or one no longer served would wait for the cyclic collector with its files open and memory held
        self.record = lru_cache(maxsize=RECORDS_CACHED)(partial(_read_record, self._stored))
        self.vectors = np.load(self.directory / VECTORS, mmap_mode="r")
        self.flags = {name: np.load(self.directory / f"{name}.npy") for name in FLAG_FIELDS}
        self.numbers = {field: np.load(self.directory / f"{name}.npy") for field, name in NUMBER_FILES.items()}
        self.confidence = self.numbers["confidence"]
        self.updated = self.numbers["update_timestamp"]
        self.expires = self.numbers["expires_at"]
        self._expiring = np.flatnonzero(~np.isnan(self.expires))
        self._masks: OrderedDict[tuple, tuple[np.ndarray, int]] = OrderedDict()
        self._masks_lock = threading.Lock()
        self.keywords = {name: KeywordColumn.load(self.directory, name) for name in KEYWORD_FIELDS}
        self.text = {field: FieldTextIndex.load(self.directory / "text" / field, engine.bm25_k1, engine.bm25_b)
                     for field in TEXT_FIELDS}
        raw = orjson.loads((self.directory / DICTIONARY).read_bytes())
        self.dictionary = KbDictionary.from_json(raw)
        centroids = np.load(self.directory / CENTROIDS)
        self.category_centroids = dict(zip(raw["centroid_categories"], centroids, strict=True))
        self.segmenter = self.dictionary.segmenter()
        if len(self.keywords["kid"].vocabulary) != self.size:
            raise VersionCorruptError(f"version {self.name} is damaged: its kid column does not match its records")

    @property
    def size(self) -> int:
        return len(self._stored)

    def get(self, kid: str) -> KnowledgeRecord | None:
        index = self.keywords["kid"].vocabulary.get(kid)  # kids are unique, so a kid's code is its position
        return None if index is None else self.record(index)

    def request_for(self, plan: SearchPlan, query_vector: np.ndarray) -> dict | None:
        """Nothing is sent anywhere: the plan runs in this process."""
        return None

    def formula_problem(self, formula: Formula) -> str | None:
        """numpy evaluates every formula the config checks let through."""
        return None

    def _filter_mask(self, filters: tuple[Filter, ...]) -> tuple[np.ndarray, int]:
        """A fresh mask of the documents passing `filters`, and how many do.

        The mask of every filter but expiry is cached (queries share a handful of filter sets), and expiry,
        which moves with the clock, is applied afterwards to the few records that have an expiry date.
        """
        fixed = tuple(f for f in filters if not isinstance(f, NotExpiredFilter))
        with self._masks_lock:
            cached = self._masks.get(fixed)
            if cached is not None:
                self._masks.move_to_end(fixed)
        if cached is None:
            mask = np.ones(self.size, dtype=bool)
            for each in fixed:
                mask &= self._mask_of(each)
            cached = (mask, int(mask.sum()))
            with self._masks_lock:
                self._masks[fixed] = cached
                while len(self._masks) > CACHED_FILTER_MASKS:
                    self._masks.popitem(last=False)
        mask, count = cached[0].copy(), cached[1]
        for expiry in (f for f in filters if isinstance(f, NotExpiredFilter)):
            expired = self._expiring[self.expires[self._expiring] <= epoch_seconds(expiry.now)]
            count -= int(mask[expired].sum())
            mask[expired] = False
        return mask, count

    def _mask_of(self, each: Filter) -> np.ndarray:
        """The documents one filter keeps, as column operations (nesting is bounded by the API's parser)."""
        if isinstance(each, TermFilter):
            if each.field in self.flags:
                return np.isin(self.flags[each.field], [int(v) for v in each.values])
            return self.keywords[each.field].matches([str(v) for v in each.values])
        if isinstance(each, RangeFilter):
            column = self.numbers[each.field]
            mask = ~np.isnan(column)
            for bound, keep in ((each.gt, np.greater), (each.gte, np.greater_equal), (each.lt, np.less),
                                (each.lte, np.less_equal)):
                if bound is not None:
                    mask &= keep(column, epoch_seconds(bound) if isinstance(bound, str) else bound)
            return mask
        if isinstance(each, ExistsFilter):
            if each.field in self.numbers:
                return ~np.isnan(self.numbers[each.field])
            if each.field in self.keywords:
                return self.keywords[each.field].present()
            return np.ones(self.size, dtype=bool)
        if isinstance(each, BoolFilter):
            mask = np.ones(self.size, dtype=bool)
            for part in each.must:
                mask &= self._mask_of(part)
            for part in each.must_not:
                mask &= ~self._mask_of(part)
            if each.should:
                mask &= np.logical_or.reduce([self._mask_of(part) for part in each.should])
            return mask
        if isinstance(each, NotExpiredFilter):
            return np.isnan(self.expires) | (self.expires > epoch_seconds(each.now))
        raise TypeError(f"no column operation for {type(each).__name__}")

    def _sort_values(self, sort: SortKey, docs: np.ndarray) -> np.ndarray:
        if sort.field in self.numbers:
            return order_key(self.numbers[sort.field][docs], sort.descending)
        return order_key(self.keywords[sort.field].sort_values(docs), sort.descending)

    def _nearest(self, query_vector: np.ndarray, mask: np.ndarray, count: int,
                 cosines: Callable[[], np.ndarray]) -> np.ndarray:
        """Vector top-N inside the filters: the ANN codes when the version has them, else an exact scan of the
        filtered rows, or of `cosines()` (every document's, computed once per search) when most pass."""
        if self.ann is not None:
            found = self.ann.nearest(query_vector, count, mask, self.overfetch)
            if found is not None:
                return found
        documents = np.flatnonzero(mask)
        if documents.size <= count:
            return documents
        if documents.size * GATHER_BELOW < self.size:  # a narrow filter: the product of its rows alone
            return documents[np.argpartition(-(self.vectors[documents] @ query_vector), count - 1)[:count]]
        return _top(documents, cosines(), count)

    def clause_postings(self, clause: Clause) -> list[Postings]:
        """Unboosted BM25 of one clause, as postings whose scores add up per document, with Elasticsearch's
        (k1 + 1) factor (its BM25 keeps the numerator Lucene 8 dropped), so `_score` means the same on both
        engines."""
        if clause.kind == "term":
            parts = [self.keywords[clause.field].term_postings(clause.query, self.k1)]
        else:
            tokens = [t for t in clause.query.split(" ") if t]
            text = self.text[clause.field]
            parts = text.match_postings(tokens) if clause.kind == "match" else [text.phrase_postings(tokens)]
        factor = np.float32(1.0 + self.k1)
        return [Postings(part.docs, part.scores * factor) for part in parts if part.docs.size]

    def _required(self, plan: SearchPlan) -> tuple[np.ndarray | None, np.float32 | None]:
        """The mask of the documents matching at least one required clause, cached like the filters' when the
        clauses are keyword terms (the planner's are category terms: a 1.3M-row scatter per query otherwise);
        and, when there is one such clause, its score, which every document left then shares."""
        clauses = plan.required_any
        if not clauses or not all(c.kind == "term" and c.field in self.keywords for c in clauses):
            return None, None
        fields = {c.field for c in clauses}
        if len(fields) > 1:
            return None, None
        field = fields.pop()
        mask = self._filter_mask((TermFilter(field, tuple(c.query for c in clauses)),))[0]
        if len(clauses) > 1:
            return mask, None
        score = self.keywords[field].term_score(clauses[0].query, self.k1)
        return mask, np.float32(clauses[0].boost) * (score * np.float32(1.0 + self.k1))

    def execute(self, plan: SearchPlan, query_vector: np.ndarray) -> EngineResult:
        mask, filtered = self._filter_mask(plan.filters)
        required_mask, shared = self._required(plan)
        scored = ((() if shared is not None else plan.required_any, True), (plan.should, False))
        parts = [(clause, required, Postings(part.docs, np.float32(clause.boost) * part.scores))
                 for clauses, required in scored for clause in clauses for part in self.clause_postings(clause)]
        base = ZERO if shared is None else shared
        by_clause: dict[str, list[Postings]] = {}
        for clause, _, part in parts:
            by_clause.setdefault(clause.name, []).append(part)
        if plan.required_any:
            if required_mask is None:
                required_mask = np.zeros(self.size, dtype=bool)
                for _, required, part in parts:
                    if required:
                        required_mask[part.docs] = True
            mask &= required_mask
            filtered = int(mask.sum())
        every_cosine = lru_cache(maxsize=1)(lambda: self.vectors @ query_vector)
        nearest = self._nearest(query_vector, mask, plan.nearest, every_cosine)
        matching = np.zeros(self.size, dtype=bool)
        matching_clauses = set(plan.matching_clauses())
        for clause, required, part in parts:
            if not required and clause in matching_clauses:
                matching[part.docs] = True
        matching[nearest] = True
        matching &= mask
        total = int(matching.sum())
        facets = {field: self.keywords[field].most_frequent(matching, plan.facet_size) for field in plan.facets}
        weighted = [part for _, _, part in parts]
        if plan.sort is None and plan.mode == Mode.FAST and filtered > plan.candidates:
            # `base` is every candidate's: it ranks none
            vector_top = nearest if plan.candidates == plan.nearest else self._nearest(
                query_vector, mask, plan.candidates, every_cosine)
            candidates = np.union1d(_text_top(weighted, mask, plan.candidates), vector_top)
            text = _summed(weighted, candidates, base)
        else:  # exact, a sort over the matching set, or fast with no more filtered records than candidates
            candidates = np.flatnonzero(matching if plan.sort is not None else mask)
            text_score = np.full(self.size, base, dtype=np.float32)
            for part in weighted:
                text_score[part.docs] += part.scores
            text = text_score[candidates]
        formula = plan.formula
        if candidates.size == 0:
            return EngineResult([], total, facets)
        variables = formula_variables(
            formula, text,
            cosine=lambda: (self.vectors[candidates] @ query_vector if candidates.size * GATHER_BELOW < self.size
                            else every_cosine()[candidates]),
            confidence=self.confidence[candidates], updated_epoch=lambda: self.updated[candidates])

        def details_of(positions: np.ndarray) -> list[dict[str, float]]:
            docs = candidates[positions]
            clauses = [(name, _summed(named, docs).tolist()) for name, named in by_clause.items()]
            if shared is not None:
                clauses.insert(0, (plan.required_any[0].name, [float(shared)] * docs.size))
            return [nonzero_details(float(text[position]), [(name, values[rank]) for name, values in clauses])
                    for rank, position in enumerate(positions.tolist())]

        order = None if plan.sort is None else self._sort_values(plan.sort, candidates)
        hits = top_hits(formula, variables, plan.window, candidates,
                        record_at=lambda position: self.record(int(candidates[position])), details_of=details_of,
                        order=order)
        return EngineResult(hits, total, facets)
