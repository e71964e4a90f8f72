"""Request validation by pydantic models, reported in the service's error model: a failure becomes one
InputError naming the path of the first problem (`filters[1].range.confidence.gte`, `events[3].position`)
and a machine-readable code, the same for every model the API validates with."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

from kb_service.errors import InputError

FILTER_KINDS = ("term", "terms", "range", "exists", "bool")  # the filter language's clause names
_ASCII_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")


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


def _integer(value: Any) -> Any:
    """A JSON integer (76 or 76.0, as JSON Schema counts them) or ASCII digits; not 2.5, true or '٣'."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, str) and _ASCII_INTEGER.fullmatch(value):
        return int(value)
    raise PydanticCustomError("not_an_integer", "expected an integer, got {got}", {"got": repr(str(value)[:40])})


Integer = Annotated[int, BeforeValidator(_integer)]


def to_flag(value: Any) -> Any:
    """A flag as `parse_bool` reads one (empty text and null mean false)."""
    try:
        return parse_bool(value, "")
    except InputError:
        raise PydanticCustomError("not_a_boolean", "expected true or false, got {got}",
                                  {"got": repr(str(value)[:40])}) from None


Flag = Annotated[bool, BeforeValidator(to_flag)]

_CODES = {"missing": "required", "int_parsing": "not_an_integer", "int_type": "not_an_integer",
          "greater_than_equal": "out_of_range", "less_than_equal": "out_of_range", "literal_error": "invalid_choice",
          "enum": "invalid_choice", "too_long": "too_many", "too_short": "too_few", "string_too_long": "too_long",
          "string_too_short": "too_short", "string_pattern_mismatch": "invalid_text",
          "extra_forbidden": "unknown_field",
          "union_tag_not_found": "invalid_filter", "float_parsing": "not_a_number", "float_type": "not_a_number",
          "finite_number": "not_finite", "dict_type": "not_an_object", "list_type": "not_a_list",
          "string_type": "not_text", "bool_parsing": "not_a_boolean", "model_type": "not_an_object",
          "model_attributes_type": "not_an_object", "less_than": "out_of_range", "greater_than": "out_of_range"}
OWN_CODES = {"required", "not_an_integer", "not_a_boolean", "invalid_filter", "one_field"}  # our validators' codes
_UNION_TAGS = ("flag", "text", "body")  # the tags the API's models give union members
_TYPE_NAMES = ("bool", "int", "str", "float")  # how pydantic names an untagged union's member, last in a path


def error_path(location: tuple[int | str, ...]) -> str:
    """`('filters', 1, 'range', 'range', 'confidence', 'gte')` as `filters[1].range.confidence.gte`: list
    positions in brackets, the clause tag pydantic repeats before its key said once, union members and
    dictionary-key markers left out."""
    path = ""
    previous: int | str | None = None
    for n, part in enumerate(location):
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (part == previous and part in FILTER_KINDS) and "[" not in part and part not in _UNION_TAGS \
                and not (part in _TYPE_NAMES and n == len(location) - 1):
            path += f".{part}" if path else part
        previous = part
    return path or "body"


def input_error(err: ValidationError) -> InputError:
    """A pydantic validation failure as the API's 400: the first problem's path, message and code."""
    first = err.errors(include_url=False)[0]
    kind = first["type"]
    message = first["msg"]
    message = message[0].lower() + message[1:] if message else kind
    return InputError(message, error_path(first["loc"]),
                      code=_CODES.get(kind, kind if kind in OWN_CODES else "invalid_parameter"))


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: object) -> M:
    """`data` as `model`, or the InputError naming what is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise input_error(err) from None
