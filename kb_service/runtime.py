"""The composition root: the parts a process needs, built once from the config and the environment and
passed down to the CLI's commands, the server, reloads and searches.

A `Runtime` owns the config (with the environment's overrides applied), the data directory's paths, the
search engine (one client per process, closed with the runtime), the encoder and the state stores. It is
the only place that reads environment variables: everything below receives values, so a test builds a
runtime with real parts on a temporary directory and nothing leaks in from the developer's shell.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from kb_service.config import DataPaths, EngineKind, ServiceConfig, load_config
from kb_service.engines.base import Engine
from kb_service.ingest.encoders import Encoder, load_encoder
from kb_service.state import StateDatabase, open_state

CLUSTER_SECRETS = ("USERNAME", "PASSWORD", "API_KEY")  # after $KB_ES_ or $KB_OS_: they win over the config


@dataclass(frozen=True)
class Environment:
    """The environment variables the service honours, read once when the process starts.

    KB_CONFIG (the config file), KB_DATA_DIR (the data directory), KB_ES_URL / KB_OS_URL (the cluster's
    nodes, comma-separated), KB_ES_* / KB_OS_* USERNAME, PASSWORD, API_KEY (cluster credentials),
    KB_STATE_PASSWORD (the shared state database's password) and KB_MODELS_DIR (where joined models are kept)
    win over the config file, so deployments and tests point a config elsewhere without editing it."""

    values: Mapping[str, str] = field(default_factory=dict)

    NAMES = ("KB_CONFIG", "KB_DATA_DIR", "KB_ES_URL", "KB_OS_URL", "KB_STATE_PASSWORD", "KB_MODELS_DIR",
             *(f"{prefix}{name}" for prefix in ("KB_ES_", "KB_OS_") for name in CLUSTER_SECRETS))

    @classmethod
    def read(cls) -> Environment:
        return cls({name: os.environ[name] for name in cls.NAMES if os.environ.get(name)})

    @property
    def config_file(self) -> str | None:
        return self.values.get("KB_CONFIG")

    @property
    def state_password(self) -> str | None:
        return self.values.get("KB_STATE_PASSWORD")

    def cluster_secrets(self, kind: EngineKind) -> dict[str, str]:
        """USERNAME, PASSWORD and API_KEY for the engine's cluster, those the environment sets."""
        prefix = "KB_OS_" if kind is EngineKind.OPENSEARCH else "KB_ES_"
        return {name: self.values[prefix + name] for name in CLUSTER_SECRETS if prefix + name in self.values}

    def apply(self, config: ServiceConfig) -> ServiceConfig:
        """`config` with the data directory, the cluster's nodes and the models folder the environment names."""
        changes: dict = {}
        if "KB_DATA_DIR" in self.values:
            changes["data_dir"] = self.values["KB_DATA_DIR"]
        url = self.values.get("KB_OS_URL" if config.engine.kind is EngineKind.OPENSEARCH else "KB_ES_URL")
        hosts = tuple(u.strip() for u in url.split(",") if u.strip()) if url else ()
        if hosts:
            changes["elasticsearch"] = replace(config.elasticsearch, hosts=hosts)
        if "KB_MODELS_DIR" in self.values:
            changes["encoder"] = replace(config.encoder, models_dir=self.values["KB_MODELS_DIR"])
        return replace(config, **changes) if changes else config


def open_engine(config: ServiceConfig, secrets: Mapping[str, str]) -> Engine:
    """The engine the config names, importing only that one: a cluster deployment never loads the embedded
    engine's faiss, and the embedded default never loads a cluster client."""
    if config.engine.kind in (EngineKind.ELASTICSEARCH, EngineKind.OPENSEARCH):
        from kb_service.engines.elastic.engine import ClusterEngine

        return ClusterEngine(config, secrets)
    from kb_service.engines.embedded.engine import EmbeddedEngine

    return EmbeddedEngine(config.paths.embedded, config.engine)


class Runtime:
    """One process's parts. The engine is opened on first use and again in a forked child (a cluster
    client's connections must not be shared across processes); the encoder is loaded once per process."""

    def __init__(self, config: ServiceConfig, environment: Environment | None = None):
        self.environment = environment or Environment()
        self.config = self.environment.apply(config)
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._engine_pid = 0

    @classmethod
    def start(cls, config_path: str | Path | None = None) -> Runtime:
        """The process's runtime: the config from `config_path`, else $KB_CONFIG, else the bundled one, with
        the environment's overrides."""
        environment = Environment.read()
        # Weights come only from installed packages: the model libraries must never try a hub download.
        os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
        return cls(load_config(config_path or environment.config_file), environment)

    def read_config(self, path: str | Path | None = None) -> ServiceConfig:
        """The config file (`path`, else the one in force) as it is now, with the environment's overrides: what
        a config reload or SIGHUP applies."""
        return self.environment.apply(load_config(path or self.config.source))

    def with_config(self, config: ServiceConfig) -> Runtime:
        """Another runtime in the same environment for `config` (comparing configs, a restart after SIGHUP)."""
        return Runtime(config, self.environment)

    @property
    def paths(self) -> DataPaths:
        return self.config.paths

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None or self._engine_pid != os.getpid():
                self._engine = open_engine(self.config, self.environment.cluster_secrets(self.config.engine.kind))
                self._engine_pid = os.getpid()
            return self._engine

    @property
    def encoder(self) -> Encoder:
        return load_encoder(self.config.encoder)

    def state(self, store: str) -> StateDatabase:
        """The database holding `store` (events, judgments, query_log, reloads, access, proposals)."""
        return open_state(self.config, store, self.environment.state_password)

    def close(self) -> None:
        """Let go of the engine's connections (the state stores' pools live as long as the process)."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None and self._engine_pid == os.getpid():
            engine.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
