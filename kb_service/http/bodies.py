"""Request bodies parsed within bounds: every JSON body the API reads goes through `json_body`.

The body's size is bounded before it is read (waitress and `server.max_body_bytes`); here its shape is: JSON
nested deeper than `MAX_DEPTH`, or holding a number JSON cannot represent as a finite double (`1e999`,
`NaN`, `Infinity`), is a 400 naming the body or the field, before any handler walks it.
"""

from __future__ import annotations

import json
import math

import orjson
from flask import request

from kb_service.errors import InputError

MAX_DEPTH = 32  # the API's deepest body (filters inside events inside a batch) is a handful of levels


def _check_depth(value: object) -> None:
    """Refuses nesting deeper than MAX_DEPTH, walking with a stack (no recursion for a hostile body to
    exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    raise InputError(f"the JSON body is nested deeper than {MAX_DEPTH} levels", "body",
                                     code="too_deep")
                stack.append((child, depth + 1))


class _NotFinite:
    """Where the lenient parser met a number that is not a finite double."""


def _non_finite_field(data: bytes) -> str | None:
    """The path (`size`, `events[2].timestamp`) of the first NaN, Infinity or overflowing number, found by
    the standard library's lenient parser; None when it finds none or cannot parse the body either."""
    marker = _NotFinite()

    def number(text: str) -> object:
        value = float(text)
        return value if math.isfinite(value) else marker

    try:
        value = json.loads(data, parse_constant=lambda _: marker, parse_float=number)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if item is marker:
            return path or "body"
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None


def parse_json(data: bytes) -> object:
    """JSON text into Python values: strict (no NaN or Infinity literals, no number that overflows a double,
    valid UTF-8 only) and at most MAX_DEPTH levels deep."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        field = _non_finite_field(data) if len(data) < 65_536 else None
        if field:
            raise InputError("expected a finite number (not NaN, Infinity or beyond a double's range)", field,
                             code="not_finite") from None
        raise InputError(f"not valid JSON: {err}", "body", code="invalid_json") from None
    _check_depth(value)
    return value


def json_body(required: bool = False) -> object:
    """The request's JSON body, or None when it has none (an InputError when `required`); a body of any
    other content type is read as JSON too, as the API always has."""
    data = request.get_data(cache=True)
    if not data.strip():
        if required:
            raise InputError("expected a JSON body", "body", code="missing_body")
        return None
    return parse_json(data)


def json_object(required: bool = False) -> dict:
    """The request's JSON body when it must be an object (empty when absent and not `required`)."""
    body = json_body(required)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InputError("expected a JSON object", "body", code="not_an_object")
    return body
