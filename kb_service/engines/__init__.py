"""The engines behind one interface (`base.py`); `engine.kind` in the config picks one.

`open_engine` imports only the engine the config names, so a cluster deployment never loads the embedded
engine's faiss and bm25s, and the embedded default never loads a cluster client. Elasticsearch and
OpenSearch share one implementation (`elastic/`), their differences isolated in `elastic/dialect.py`.
"""

from __future__ import annotations

from kb_service.config import EngineKind, ServiceConfig
from kb_service.engines.base import Engine


def open_engine(config: ServiceConfig) -> Engine:
    if config.engine.kind in (EngineKind.ELASTICSEARCH, EngineKind.OPENSEARCH):
        from kb_service.engines.elastic.engine import ClusterEngine

        return ClusterEngine(config)
    from kb_service.engines.embedded.engine import EmbeddedEngine

    return EmbeddedEngine(config.paths.embedded, config.engine)
