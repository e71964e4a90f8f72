"""The two engines behind one small interface: build a version, switch to it, open the served one.

`engine.backend` picks the embedded engine (versions on local disk) or Elasticsearch (versioned indices
behind a read alias); loading, serving, the CLI and the API only talk to this interface.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from kb_service.config import EngineConfig, ServiceConfig
from kb_service.embedded.index import EmbeddedIndex, EngineResult, write_index
from kb_service.embedded.version_store import VersionInfo, VersionStore
from kb_service.records import KnowledgeRecord
from query_understanding.segmenter import Segmenter
from query_understanding.understander import KbDictionary
from scoring.plan import SearchPlan


class BackendUnavailableError(RuntimeError):
    """The search engine did not answer in time or at all; the API answers 503 and /readyz turns false."""


class ServedIndex(Protocol):
    """One opened version: what the search service and query understanding read from it."""

    name: str
    manifest: dict
    dictionary: KbDictionary
    segmenter: Segmenter
    category_centroids: dict[str, np.ndarray]

    @property
    def size(self) -> int: ...

    def get(self, kid: str) -> KnowledgeRecord | None: ...

    def execute(self, plan: SearchPlan, query_vector: np.ndarray) -> EngineResult: ...


class IndexStore(Protocol):
    def current_name(self) -> str | None: ...

    def reachable(self) -> bool: ...

    def open(self, name: str) -> ServedIndex: ...

    def versions(self) -> list[VersionInfo]: ...

    def build(self, records: list[KnowledgeRecord], vectors: np.ndarray, segmented: Callable[[str], str],
              dictionary: KbDictionary, centroids: dict[str, np.ndarray], manifest: dict) -> str: ...

    def switch(self, name: str) -> None: ...

    def discard(self, name: str) -> None: ...

    def prune(self, keep: int) -> list[str]: ...

    def size_bytes(self, name: str) -> int: ...


class EmbeddedStore(VersionStore):
    def __init__(self, root: Path, engine: EngineConfig):
        super().__init__(root)
        self.engine = engine

    def open(self, name: str) -> EmbeddedIndex:
        return EmbeddedIndex(self.path_of(name), self.engine)

    def reachable(self) -> bool:
        return True

    def build(self, records: list[KnowledgeRecord], vectors: np.ndarray, segmented: Callable[[str], str],
              dictionary: KbDictionary, centroids: dict[str, np.ndarray], manifest: dict) -> str:
        with self.building() as build_dir:
            write_index(build_dir, records, vectors, segmented, dictionary, centroids, self.engine)
            return self.commit(build_dir, manifest)

    def size_bytes(self, name: str) -> int:
        return sum(p.stat().st_size for p in self.path_of(name).rglob("*") if p.is_file())


def embedded_store(config: ServiceConfig) -> EmbeddedStore:
    return EmbeddedStore(config.data_path / "embedded", config.engine)


def open_store(config: ServiceConfig) -> IndexStore:
    if config.engine.backend == "elasticsearch":
        from kb_service.elastic.store import ElasticStore

        return ElasticStore(config)
    return embedded_store(config)


def category_centroids(records: list[KnowledgeRecord], vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Each category's mean record vector, unit length: the category classifier's prototypes."""
    categories = sorted({r.category for r in records})
    position = {category: i for i, category in enumerate(categories)}
    category_of = np.array([position[r.category] for r in records])
    centroids = np.stack([vectors[category_of == i].mean(axis=0) for i in range(len(categories))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return dict(zip(categories, centroids.astype(np.float32), strict=True))
