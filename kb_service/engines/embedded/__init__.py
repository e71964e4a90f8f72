"""The embedded engine: versions on local disk (records, BM25 text indices, vectors), no server."""
