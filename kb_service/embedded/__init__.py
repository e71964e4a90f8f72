"""The embedded engine: versioned on-disk indexes (records, BM25 text index, vectors) with no server."""
