"""What every engine offers, in engine-neutral types: loading, serving and the CLI only talk to these.

An *engine* (embedded, Elasticsearch) keeps *versions*: complete, immutable indices of one load, one of which
is served. `Engine` builds, lists, switches and opens versions; an `OpenVersion` executes search plans. The
engines implement these protocols and never import each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kb_service.errors import KbError, UnavailableError
from kb_service.records import KnowledgeRecord
from query_understanding.dictionary import KbDictionary
from query_understanding.segmenter import Segmenter
from scoring.formula import Formula
from scoring.hits import ScoredHit
from scoring.plan import SearchPlan

# When the search being served must be done (time.monotonic()), set by the serving layer per request: an
# engine that waits on the network times its requests out within what is left.
SEARCH_DEADLINE: ContextVar[float | None] = ContextVar("search_deadline", default=None)


def seconds_left(default: float) -> float:
    """The time a request may take: `default`, or less when the current search's deadline is nearer."""
    deadline = SEARCH_DEADLINE.get()
    if deadline is None:
        return default
    return max(0.001, min(default, deadline - time.monotonic()))


class EngineUnavailableError(UnavailableError):
    """The search engine did not answer in time or at all; the API answers 503 and /readyz turns false."""

    code = "engine_unavailable"


class EngineError(KbError):
    """The engine refused an operation on a version (documents it would not index, a count that does not
    add up); the served version is unchanged."""

    code = "engine_refused"

    http_status = 422


class VersionUnusableError(UnavailableError):
    """A version that exists but cannot be served (damaged files, another index format, vectors of another
    size): the service falls back to an intact version rather than serve it."""

    code = "version_unusable"


class VersionNotFoundError(KbError):
    """No complete version of that name: it never finished building or was pruned."""

    code = "version_not_found"

    http_status = 404


@dataclass(frozen=True)
class VersionInfo:
    """One complete version as listings show it; `path` is where the embedded engine keeps it."""

    name: str
    path: Path | None
    manifest: dict
    current: bool


@dataclass(frozen=True)
class EngineResult:
    """The engine's top hits of a plan (its rescoring window), how many records are in the plan's matching
    set and, for each facet field the plan asks for, its most frequent values there with their counts."""

    hits: list[ScoredHit]
    total: int
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


class OpenVersion(Protocol):
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

    def request_for(self, plan: SearchPlan, query_vector: np.ndarray) -> dict | None:
        """The request this engine sends for `plan`, as JSON an analyst can replay in their own tools;
        None where there is no request (the embedded engine runs in process)."""
        ...

    def formula_problem(self, formula: Formula) -> str | None:
        """Why this engine cannot run `formula` on this version (None when it can): checked when a version
        or a config goes live, so a formula the engine refuses is a config error, never a failed search."""


class Engine(Protocol):
    """An engine's versions: build one, switch the served one atomically, open, list, discard and prune."""

    def current_name(self) -> str | None: ...

    def reachable(self) -> bool: ...

    def open(self, name: str) -> OpenVersion: ...

    def versions(self) -> list[VersionInfo]: ...

    def build(self, records: list[KnowledgeRecord], vectors: np.ndarray, segmented: Callable[[str], str],
              dictionary: KbDictionary, centroids: dict[str, np.ndarray], manifest: dict) -> str: ...

    def switch(self, name: str) -> None: ...

    def discard(self, name: str) -> None: ...

    def prune(self, keep: int) -> list[str]: ...

    def size_bytes(self, name: str) -> int: ...

    def close(self) -> None:
        """Let go of what the engine holds open (a cluster client's connection pool); a process that opens
        an engine for one job (a reload, a CLI command) closes it, so a server's reloads leak no sockets."""
        ...

    def exclusive(self, name: str, refusal: Callable[[str], Exception]) -> AbstractContextManager[None]:
        """A lock named `name` that every process serving from this engine respects (the data directory's
        host for the embedded engine, every host of a cluster); raises `refusal(holder)` at once when taken."""
        ...


def removable_versions(versions: list[VersionInfo], keep: int) -> list[VersionInfo]:
    """The oldest versions beyond `keep` (counting the served one), never the served one."""
    removable = [v for v in versions if not v.current]
    return removable[: max(0, len(removable) - (keep - 1))]
