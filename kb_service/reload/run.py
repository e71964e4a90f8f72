"""A gated reload: read the reviewed knowledge, clean it, build a version, check it, and only then serve it.

read → validate → merge near-duplicates → embed what is new (content-hash cache) → build (not served) →
gates (schema and dimensions, record-count change, canary queries) → atomic switch → prune. One reload
at a time per data directory (a file lock all processes on the host share); every run is recorded in the
history with its counts and gate results. Any failure before the switch leaves the served version as it
was; a run killed at any point leaves at most an unserved build, which the next run removes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kb_service import metrics
from kb_service.config import ServiceConfig
from kb_service.engines.base import Engine
from kb_service.errors import EXIT_REFUSED_BY_GATES, ConflictError
from kb_service.ingest.loading import build_version
from kb_service.ingest.quality import merge_near_duplicates
from kb_service.ingest.readers import read_records
from kb_service.memory import release_free_heap
from kb_service.records import KnowledgeRecord, now_timestamp
from kb_service.reload.history import GateResult, ReloadCounts, ReloadHistory, ReloadRun, RunStatus
from kb_service.reload.review import ReviewDatabase
from kb_service.runtime import Runtime
from kb_service.state import instance_name
from scoring.planner import SearchRequest

log = logging.getLogger(__name__)


class ReloadBusyError(ConflictError):
    """Another reload holds the lock for this data directory."""

    code = "reload_running"


class ReloadRefusedError(ConflictError):
    """A gate stopped the switch; `run` holds the report. The served version is unchanged."""

    code = "reload_refused"

    exit_code = EXIT_REFUSED_BY_GATES

    def __init__(self, run: ReloadRun):
        failed = "; ".join(f"{g.gate}: {g.detail}" for g in run.gates if not g.passed)
        super().__init__(f"reload refused by its gates ({failed}); still serving the previous version "
                         "(`kb reload --force` overrides)", run=run.to_dict())
        self.run = run


def history_of(runtime: Runtime) -> ReloadHistory:
    return ReloadHistory(runtime.state("reloads"), instance_name(runtime.config))


def reload_lock(engine: Engine):
    """One reload or rollback at a time for everything serving from `engine`: the processes of the host for
    the embedded engine, every service host for a cluster."""
    return engine.exclusive("reload", lambda holder: ReloadBusyError(f"another reload is running ({holder})"))


@dataclass(frozen=True)
class Source:
    """The records a reload serves, where they came from, and the content hashes already computed."""

    records: list[KnowledgeRecord]
    name: str
    fingerprints: dict[str, str]


def read_source(config: ServiceConfig, counts: ReloadCounts, trusted: dict[str, str]) -> Source:
    """Servable records from the configured files, else from the review database (whose rows `trusted`, the
    last served content hashes, spares validating again)."""
    settings = config.reload
    if settings.files:
        result = read_records(list(settings.files), quarantine=True)
        counts.rejected = len(result.rejected)
        for rejected in result.rejected[:20]:
            log.warning("reload: rejected %s", rejected)
        now = now_timestamp()
        live = [r for r in result.records if not r.deleted and not (r.expires_at and r.expires_at <= now)]
        counts.expired = sum(1 for r in result.records if not r.deleted and r.expires_at and r.expires_at <= now)
        return Source(live, ", ".join(settings.files), {})
    url = settings.database_url(config.paths)
    database = ReviewDatabase(url)
    try:
        servable = database.servable(trusted)
    finally:
        database.close()
    counts.expired = servable.expired
    return Source(servable.records, url.split("@")[-1], servable.fingerprints)


def _count_gate(config: ServiceConfig, engine: Engine, records: int, removed: int) -> list[GateResult]:
    settings = config.reload
    gates = [GateResult("min_records", records >= settings.min_records,
                        f"{records} records (minimum {settings.min_records})")]
    current = next((v for v in engine.versions() if v.current), None)
    served = int(current.manifest.get("records", 0)) if current else 0
    if served:
        ratio = removed / served
        gates.append(GateResult("removed_ratio", ratio <= settings.max_removed_ratio,
                                f"{removed} of {served} served records would disappear ({ratio:.1%}; "
                                f"limit {settings.max_removed_ratio:.0%})"))
    return gates


def _schema_gate(runtime: Runtime, name: str, records: int) -> GateResult:
    """From the sealed version's manifest (the canaries then open it for real)."""
    manifest = next(v.manifest for v in runtime.engine.versions() if v.name == name)
    dims = runtime.encoder.dims
    problems = []
    if manifest.get("dims") != dims:
        problems.append(f"vectors have {manifest.get('dims')} dimensions, the encoder makes {dims}")
    if manifest.get("records") != records:
        problems.append(f"the version holds {manifest.get('records')} records, {records} were loaded")
    return GateResult("schema", not problems, "; ".join(problems) or f"{records} records, {dims}-d vectors")


def _canary_gates(runtime: Runtime, name: str) -> list[GateResult]:
    if not runtime.config.reload.canaries:
        return []
    from kb_service.serving.service import SearchService

    gates = []
    service = SearchService(runtime, pinned=name)
    for canary in runtime.config.reload.canaries:
        hits = service.search(SearchRequest(query=canary.query, size=canary.top_k)).hits
        kids = [h.record.kid for h in hits]
        rank = kids.index(canary.kid) + 1 if canary.kid in kids else None
        gates.append(GateResult(f"canary {canary.query!r}", rank is not None,
                                f"{canary.kid} at rank {rank}" if rank else
                                f"{canary.kid} not in the top {canary.top_k} (top: {', '.join(kids[:3])})"))
    return gates


def run_reload(runtime: Runtime, trigger: str = "manual", force: bool = False) -> ReloadRun:
    """One gated reload; returns the run, raises ReloadRefusedError (gates), ReloadBusyError, or the
    failure that stopped it. The history records every outcome."""
    with reload_lock(runtime.engine):
        return run_reload_locked(runtime, trigger, force)


def run_reload_locked(runtime: Runtime, trigger: str, force: bool) -> ReloadRun:
    """`run_reload` for a caller that already holds the reload lock (a server holding it for the process that
    builds, so that a second reload is refused at once rather than once that process has started)."""
    history = history_of(runtime)
    crashed = history.mark_crashed()
    if crashed:
        log.warning("%d earlier reload run(s) were killed mid-way; their leftovers are removed now", crashed)
    run = history.start(trigger)
    started = time.monotonic()
    try:
        _reload(runtime, run, history, force)
    except ReloadRefusedError:
        run.status = RunStatus.REFUSED
        raise
    except BaseException as err:
        run.status = RunStatus.FAILED
        run.message = f"{type(err).__name__}: {err}"
        raise
    finally:
        run.duration_s = round(time.monotonic() - started, 3)
        metrics.RELOADS.labels(run.status.value).inc()
        metrics.RELOAD_SECONDS.labels(run.status.value).observe(run.duration_s)
        history.finish(run)
        log.info("reload %d %s in %.1fs: %s", run.id, run.status, run.duration_s, run.counts)
        release_free_heap()  # the build's peak, freed by now, would otherwise stay resident in a server
    return run


def _reload(runtime: Runtime, run: ReloadRun, history: ReloadHistory, force: bool) -> None:
    config, engine = runtime.config, runtime.engine
    counts = run.counts
    previous = history.snapshot()
    source = read_source(config, counts, previous)
    records, merges = merge_near_duplicates(source.records, "".join(config.reload.merge_particles))
    counts.merged = len(merges)
    for merge in merges[:20]:
        log.info("quality pass: merged %s into %s", merge.dropped, merge.kept)
    counts.records = len(records)
    contents = {r.kid: source.fingerprints.get(r.kid) or r.fingerprint() for r in records}
    counts.added = sum(1 for kid in contents if kid not in previous)
    counts.updated = sum(1 for kid, digest in contents.items() if kid in previous and previous[kid] != digest)
    counts.removed = sum(1 for kid in previous if kid not in contents)
    if not previous:
        current = next((v for v in engine.versions() if v.current), None)
        counts.removed = max(0, int(current.manifest.get("records", 0)) - len(records)) if current else 0
    gates = _count_gate(config, engine, len(records), counts.removed)
    if not all(g.passed for g in gates) and not force:
        run.gates = gates
        raise ReloadRefusedError(run)
    built = build_version(runtime, records, switch=False, source=f"reload from {source.name}")
    name, counts.encoded = built.name, built.encoded
    counts.reused = len(records) - counts.encoded
    run.version = name
    gates += [_schema_gate(runtime, name, len(records)), *_canary_gates(runtime, name)]
    run.gates = gates
    if not all(g.passed for g in gates):
        if not force:
            engine.discard(name)
            raise ReloadRefusedError(run)
        run.message = "gates overridden with --force"
    engine.switch(name)
    engine.prune(config.engine.keep_versions)
    history.replace_snapshot(contents, previous)
    run.status = RunStatus.SUCCEEDED


Reloader = Callable[[Runtime, str, bool], ReloadRun]  # run_reload, or reload_apart in a long-lived server


class RollbackError(ConflictError):
    """No such version, or no older one to go back to."""

    code = "rollback_refused"


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the version served now and the one served before."""

    serving: str
    previous: str | None


def rollback(runtime: Runtime, version: str | None = None) -> Rollback:
    """Serve `version`, else the newest version older than the served one."""
    engine = runtime.engine
    with reload_lock(engine):
        names = [v.name for v in engine.versions()]
        current = engine.current_name()
        if version:
            if version not in names:
                raise RollbackError(f"no complete version named {version!r} (have: {', '.join(names) or 'none'})",
                                    "version")
            target = version
        else:
            older = names[:names.index(current)] if current in names else []
            if not older:
                raise RollbackError("no older version to roll back to (see `kb versions`)", "version")
            target = older[-1]
        engine.switch(target)
        return Rollback(target, current)
