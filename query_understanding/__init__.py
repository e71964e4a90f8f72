"""Query understanding: raw user text in, a typed ParsedQuery out (no index, no scoring knowledge here)."""

from query_understanding.parsed_query import LinkedSpan, ParsedQuery
from query_understanding.understander import QueryUnderstander, UnderstandingConfig

__all__ = ["LinkedSpan", "ParsedQuery", "QueryUnderstander", "UnderstandingConfig"]
