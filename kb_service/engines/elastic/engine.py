"""A cluster engine (Elasticsearch or OpenSearch): versioned indices behind one read alias, as the embedded
engine does on disk.

A load creates `<prefix>_v000042`, bulk-loads it with replicas 0 and refresh off, restores the serving
settings, checks the count, records the version (manifest and query-understanding dictionary) in the meta
index, and only then may the alias move, in one `_aliases` call. A version without its meta document is an
unfinished load: it is never served, and the next load deletes it. What differs between the two engines
lives in `dialect.py`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from urllib.parse import quote

import numpy as np

from kb_service.config import EngineConfig, ServiceConfig
from kb_service.engines.base import EngineError, VersionInfo, VersionNotFoundError, removable_versions
from kb_service.engines.elastic.dialect import DIALECTS, Cluster
from kb_service.engines.elastic.layout import (
    loading_settings,
    read_mapping,
    serving_settings,
    to_document,
    version_index_body,
)
from kb_service.engines.elastic.lease import cluster_lease
from kb_service.engines.elastic.version import ClusterVersion
from kb_service.errors import ConflictError
from kb_service.progress import Progress
from kb_service.records import KnowledgeRecord
from query_understanding.dictionary import KbDictionary

log = logging.getLogger(__name__)


class BulkLoadError(EngineError):
    """Records the cluster refused; the new version is deleted and the alias never moved."""

    def __init__(self, engine: str, index: str, failures: list[tuple[str, str]], total: int):
        self.failures = failures
        shown = "; ".join(f"kid {kid}: {reason}" for kid, reason in failures[:10])
        more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
        super().__init__(f"{len(failures)} of {total} records were refused by {engine} while loading "
                         f"{index}: {shown}{more}; the served version is unchanged")


class ClusterEngine:
    """Versions as indices `<prefix>_v000042`, their manifests in the meta index, served through the alias."""

    def __init__(self, config: ServiceConfig, secrets: Mapping[str, str]):
        self.settings = config.elasticsearch
        self.engine: EngineConfig = config.engine
        self.dialect = DIALECTS[config.engine.kind]
        self.cluster = Cluster(self.dialect, self.settings, secrets)
        self.client = self.cluster.client
        self._number = re.compile(rf"^{re.escape(self.settings.index_prefix)}_v(\d{{6}})$")

    # --- reading -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.client.close()

    def reachable(self) -> bool:
        """Cluster health answers (any colour): `GET /` (ping) needs the rest-root module, not always there."""
        try:
            self.cluster.request("GET", "/_cluster/health", timeout=min(1.0, self.settings.request_timeout_s))
        except Exception:
            return False
        return True

    def _alias_holders(self) -> list[str]:
        return list(self.cluster.request("GET", f"/_alias/{self.settings.read_alias}", ignore=(404,)) or {})

    def current_name(self) -> str | None:
        holders = self._alias_holders()
        return sorted(holders)[-1] if holders else None

    def _meta(self, name: str) -> dict | None:
        found = self.cluster.request("GET", f"/{self.settings.meta_index}/_doc/{quote(name, safe='')}", ignore=(404,))
        return found["_source"] if found and found.get("found") else None

    def _complete_meta(self, name: str) -> dict:
        meta = self._meta(name)
        if meta is None or meta.get("status") != "complete":
            raise VersionNotFoundError(f"no complete {self.dialect.name} version named {name!r}", "version")
        return meta

    def open(self, name: str) -> ClusterVersion:
        return ClusterVersion(self.cluster, name, self._complete_meta(name), self.settings)

    def versions(self) -> list[VersionInfo]:
        current = self.current_name()
        response = self.cluster.request("POST", f"/{self.settings.meta_index}/_search", {
            "size": 1000, "sort": [{"index": "asc"}], "_source": ["index", "manifest"],
            "query": {"term": {"status": "complete"}}}, ignore=(404,))
        if response is None:
            return []
        return [VersionInfo(hit["_id"], None, hit["_source"]["manifest"], hit["_id"] == current)
                for hit in response["hits"]["hits"]]

    def _version_indices(self) -> list[str]:
        found = self.cluster.request("GET", f"/{self.settings.index_prefix}_v*",
                                     params={"allow_no_indices": True, "expand_wildcards": "open,closed"})
        return sorted(name for name in found if self._number.match(name))

    # --- writing -------------------------------------------------------------------------------------------
    def exclusive(self, name: str, refusal: Callable[[str], Exception]) -> AbstractContextManager[None]:
        """A lease in the meta index: every service host using this cluster, and freed if its holder dies."""
        self._ensure_meta_index()
        return cluster_lease(self.cluster, self.settings.meta_index, name, self.settings.reload_lease_s, refusal)

    def _ensure_meta_index(self) -> None:
        if not self.cluster.request("HEAD", f"/{self.settings.meta_index}", ignore=(404,)):  # True when it exists
            self.cluster.request("PUT", f"/{self.settings.meta_index}", read_mapping("meta.json"), ignore=(400,))

    def _remove_unfinished(self, existing: list[str]) -> None:
        served = self.current_name()
        for name in existing:
            meta = self._meta(name)
            if name != served and (meta is None or meta.get("status") != "complete"):
                log.warning("deleting %s: left by a load that did not finish", name)
                self._delete_index(name)

    def _delete_index(self, name: str) -> None:
        self.cluster.request("DELETE", f"/{name}", ignore=(404,))

    def build(self, records: list[KnowledgeRecord], vectors: np.ndarray, segmented: Callable[[str], str],
              dictionary: KbDictionary, centroids: dict[str, np.ndarray], manifest: dict) -> str:
        """Create, load, check and register a new version; it is not served until `switch`."""
        self._ensure_meta_index()
        existing = self._version_indices()
        self._remove_unfinished(existing)
        numbers = [int(m.group(1)) for n in existing if (m := self._number.match(n))]
        known = [int(m.group(1)) for v in self.versions() if (m := self._number.match(v.name))]
        name = f"{self.settings.index_prefix}_v{max(numbers + known, default=0) + 1:06d}"
        body = version_index_body(self.dialect, self.settings, self.engine, vectors.shape[1])
        body["settings"].update(loading_settings(self.settings))
        self.cluster.request("PUT", f"/{name}", body)
        try:
            self._bulk_load(name, records, vectors, segmented)
            self.cluster.request("PUT", f"/{name}/_settings", {"index": serving_settings(self.settings)})
            self.cluster.request("POST", f"/{name}/_refresh")
            self._expunge_deletes(name)
            # in the path, not `params`: opensearch-py reads a `timeout` parameter as its own request timeout
            self.cluster.request("GET", f"/_cluster/health/{name}?wait_for_status=yellow&timeout=60s")
            count = self.cluster.request("GET", f"/{name}/_count")["count"]
            if count != len(records):
                raise EngineError(f"{name} holds {count} documents after loading {len(records)} records; "
                                  "the served version is unchanged")
            self.cluster.request("PUT", f"/{self.settings.meta_index}/_doc/{name}", params={"refresh": "wait_for"},
                                 body={
                "index": name, "status": "complete",
                "manifest": {**manifest, "name": name},
                "dictionary": dictionary.to_json(),
                "centroids": {"categories": list(centroids),
                              "vectors": [np.round(v.astype(np.float64), 7).tolist() for v in centroids.values()]},
            })
        except BaseException:
            self._delete_index(name)
            raise
        return name

    def _expunge_deletes(self, name: str) -> None:
        """Merge away deleted documents, should any be left: Lucene counts them in the BM25 statistics
        (document frequencies, average lengths) until a merge drops them, so a version holding some would
        score text differently from the embedded engine, and differently again after its next merge."""
        stats = self.cluster.request("GET", f"/{name}/_stats/docs")
        deleted = stats["indices"][name]["primaries"]["docs"]["deleted"]
        if deleted:
            log.info("%s: merging away %d deleted documents so text statistics are exact", name, deleted)
            self.cluster.request("POST", f"/{name}/_forcemerge", params={"only_expunge_deletes": True})
            self.cluster.request("POST", f"/{name}/_refresh")

    def _bulk_load(self, name: str, records: list[KnowledgeRecord], vectors: np.ndarray,
                   segmented: Callable[[str], str]) -> None:
        """Documents are created, never overwritten: when the client retries a chunk that timed out but was
        indexed, the second copy is refused (409) instead of replacing the first and leaving it deleted."""
        def actions() -> Iterator[dict]:
            for record, vector in zip(records, vectors, strict=True):
                yield {"_op_type": "create", "_index": name, "_id": record.kid,
                       "_source": to_document(record, vector, segmented)}

        progress = Progress(f"indexing into {name}", len(records))
        failures: list[tuple[str, str]] = []
        for ok, item in self.dialect.parallel_bulk(self.client, actions(), thread_count=self.settings.bulk_threads,
                                                   chunk_size=self.settings.bulk_chunk_size, raise_on_error=False,
                                                   raise_on_exception=False):
            result = next(iter(item.values()))
            if not ok and not _created_by_an_earlier_attempt(result):
                error = result.get("error", result)
                failures.append((str(result.get("_id")), error.get("reason", str(error)) if isinstance(error, dict)
                                 else str(error)))
            progress.advance(1)
        if failures:
            raise BulkLoadError(self.dialect.name, name, failures, len(records))


    def switch(self, name: str) -> None:
        """Point the read alias at `name` and away from every other index, atomically."""
        self._complete_meta(name)
        actions = [{"remove": {"index": holder, "alias": self.settings.read_alias}}
                   for holder in self._alias_holders() if holder != name]
        actions.append({"add": {"index": name, "alias": self.settings.read_alias}})
        self.cluster.request("POST", "/_aliases", {"actions": actions})

    def discard(self, name: str) -> None:
        """Delete a version that must never be served (a reload's gates refused it)."""
        if name == self.current_name():
            raise ConflictError(f"{name} is the served version", "version")
        self.cluster.request("DELETE", f"/{self.settings.meta_index}/_doc/{name}", params={"refresh": "wait_for"},
                             ignore=(404,))
        self._delete_index(name)

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`, never the served one."""
        doomed = removable_versions(self.versions(), keep)
        for version in doomed:
            self.discard(version.name)
        return [v.name for v in doomed]

    def size_bytes(self, name: str) -> int:
        stats = self.cluster.request("GET", f"/{name}/_stats/store")
        return int(stats["indices"][name]["primaries"]["store"]["size_in_bytes"])


def _created_by_an_earlier_attempt(result: dict) -> bool:
    """A create refused because the id exists: kids are unique within a load, so only a retried request of
    this same load can have created it, with the same document."""
    error = result.get("error")
    return result.get("status") == 409 and isinstance(error, dict) and error.get("type") == (
        "version_conflict_engine_exception")
