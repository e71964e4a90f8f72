"""Query understanding: raw user text in, a typed ParsedQuery out (no index, no scoring knowledge here)."""

from query_understanding.dictionary import KbDictionary, UnderstandingConfig
from query_understanding.parsed_query import LinkedSpan, ParsedQuery
from query_understanding.understander import QueryUnderstander

__all__ = ["KbDictionary", "LinkedSpan", "ParsedQuery", "QueryUnderstander", "UnderstandingConfig"]
