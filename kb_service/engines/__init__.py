"""The engines behind one interface (`base.py`); `engine.kind` in the config picks one, and the runtime
(`kb_service/runtime.py`) opens it.

Elasticsearch and OpenSearch share one implementation (`elastic/`), their differences isolated in
`elastic/dialect.py`; the embedded engine (`embedded/`) and it never import each other.
"""
