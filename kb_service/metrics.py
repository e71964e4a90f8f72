"""Prometheus metrics of the service, defined once: the HTTP layer observes requests and search stages,
reloads record their outcomes, `/metrics` exposes them (every worker's, in multi-process mode).

Metric objects live in the client's default registry, created when this module is first imported, so any
number of apps in one process (tests) share them instead of registering them twice.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as multiprocess_collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("kb_http_requests", "HTTP requests answered", ["endpoint", "method", "status", "mode"])
REQUEST_SECONDS = Histogram("kb_http_request_seconds", "Time to answer an HTTP request", ["endpoint", "mode"],
                            buckets=LATENCY_BUCKETS)
STAGE_SECONDS = Histogram("kb_search_stage_seconds", "Time a search spends in each stage", ["stage", "mode"],
                          buckets=LATENCY_BUCKETS)
SERVED = Gauge("kb_served_version", "1 for the index version and config a process serves",
               ["index_version", "config_version"], multiprocess_mode="liveall")
QUERY_VECTOR_CACHE = Gauge("kb_query_vector_cache", "Query vector cache lookups of a process", ["result"],
                           multiprocess_mode="liveall")
FALLBACK = Gauge("kb_version_fallback", "1 while a process serves another version than CURRENT names (damaged, "
                 "missing or unusable); /readyz says why", multiprocess_mode="liveall")
FALLBACKS = Counter("kb_version_fallbacks", "Times a process began serving a fallback version")
RELOADS = Counter("kb_reloads", "Reload runs by outcome", ["status"])
QUERY_LOG_DROPPED = Counter("kb_query_log_dropped", "Searches left out of the query log because its queue was full "
                            "(the state database is slow or down); searches themselves never wait for it")
QUERY_LOG_FAILED = Counter("kb_query_log_failed_batches", "Query-log batches the state database refused")
RELOAD_SECONDS = Histogram("kb_reload_seconds", "Duration of reload runs", ["status"],
                           buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800))


_published: dict[int, tuple[str, str]] = {}  # what each service of this process last reported as served
_falling_back: set[int] = set()  # the services of this process last reported as serving a fallback


def publish_state(owner: object, version: str | None, config_version: str, cache_hits: int,
                  cache_misses: int, fallback: bool = False) -> None:
    """A service's served version, whether it is a fallback, and its query-vector cache counts. The version
    it served before is set to 0, not removed: in multi-process mode the client keeps every label set a
    process ever wrote."""
    if fallback and id(owner) not in _falling_back:
        FALLBACKS.inc()
    (_falling_back.add if fallback else _falling_back.discard)(id(owner))
    FALLBACK.set(1 if fallback else 0)
    previous = _published.get(id(owner))
    others = {label for key, label in _published.items() if key != id(owner)}
    if previous and previous != (version, config_version) and previous not in others:
        SERVED.labels(*previous).set(0)  # unless another service of this process still serves it
    if version is not None:
        SERVED.labels(version, config_version).set(1)
        _published[id(owner)] = (version, config_version)
    QUERY_VECTOR_CACHE.labels("hit").set(cache_hits)
    QUERY_VECTOR_CACHE.labels("miss").set(cache_misses)


_shared: list[str] = []  # the folder through which the server's workers share their metrics, once set


def share_through(directory: str) -> None:
    """Every worker's metrics through files in `directory`, which the process set as $PROMETHEUS_MULTIPROC_DIR
    before prometheus_client was imported."""
    _shared[:] = [directory]


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format: this process's, or every worker's once `share_through`."""
    if _shared:
        registry = CollectorRegistry()
        multiprocess_collector.MultiProcessCollector(registry, path=_shared[0])
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def forget_process(pid: int) -> None:
    """Drops the live gauges of a process that has ended (a reload's build process), whose last values would
    otherwise stay in the shared exposition; its counters and histograms stay counted."""
    if _shared:
        multiprocess_collector.mark_process_dead(pid, _shared[0])
