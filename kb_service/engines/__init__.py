"""The engines behind one interface (`base.py`); `engine.kind` in the config picks one.

`open_engine` imports only the engine the config names, so an Elasticsearch deployment never loads the
embedded engine's faiss and bm25s, and the embedded default never loads the Elasticsearch client.
"""

from __future__ import annotations

from kb_service.config import EngineKind, ServiceConfig
from kb_service.engines.base import Engine


def open_engine(config: ServiceConfig) -> Engine:
    if config.engine.kind is EngineKind.ELASTICSEARCH:
        from kb_service.engines.elastic.engine import ElasticsearchEngine

        return ElasticsearchEngine(config)
    from kb_service.engines.embedded.engine import EmbeddedEngine

    return EmbeddedEngine(config.data_path / "embedded", config.engine)
