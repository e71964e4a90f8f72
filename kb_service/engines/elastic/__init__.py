"""The Elasticsearch engine: the same search plans and formula as the embedded engine, run on a cluster."""
