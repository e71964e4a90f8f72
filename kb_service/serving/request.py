"""Loosely typed search input (a query string, a JSON body, CLI flags) validated into a `SearchRequest`.

The HTTP API and the CLI both call `parse_request`, so a bad parameter gets the same message naming the same
field on either.
"""

from __future__ import annotations

import re
from typing import Any

from kb_service.config import ServiceConfig
from kb_service.errors import InputError
from scoring.plan import Mode
from scoring.planner import SearchRequest


def parse_bool(value: Any, field: str) -> bool:
    """A flag: true/false, 1/0, yes/no, on/off, as a JSON boolean or text (absent or empty means false)."""
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise InputError(f"expected true or false, got {value!r}", field)


_ASCII_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")


def parse_int(value: Any, field: str, low: int, high: int) -> int:
    """An integer within [low, high], as a JSON integer or ASCII digits (not `2.9`, not `٣`, not `true`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _ASCII_INTEGER.fullmatch(value):
        number = int(value)
    else:
        raise InputError(f"expected an integer, got {str(value)[:40]!r}", field, code="not_an_integer")
    if not low <= number <= high:
        raise InputError(f"must be between {low} and {high}", field, code="out_of_range")
    return number


def parse_request(params: dict, config: ServiceConfig) -> SearchRequest:
    """Validate search parameters (`q`, `size`, `from`, `category`, `mode`, `explain`) into a SearchRequest."""
    query = params.get("q", params.get("query"))
    if not isinstance(query, str) or not query.strip():
        raise InputError("required: the query text", "q")
    limits = config.search
    categories = params.get("category", ())
    if isinstance(categories, str):
        categories = [c for c in categories.split(",") if c]
    if not isinstance(categories, list | tuple) or not all(isinstance(c, str) for c in categories):
        raise InputError("expected a category name or a list of them", "category")
    mode = params.get("mode")
    if mode == "":
        mode = None
    if mode is not None and (not isinstance(mode, str) or mode not in tuple(Mode)):
        raise InputError(f"must be one of {', '.join(Mode)}", "mode", code="invalid_choice")
    return SearchRequest(
        query=query,
        size=parse_int(params.get("size", limits.default_size), "size", 1, limits.max_size),
        offset=parse_int(params.get("from", 0), "from", 0, limits.max_offset),
        categories=tuple(categories),
        explain=parse_bool(params.get("explain"), "explain"),
        mode=Mode(mode) if mode else None,
    )
