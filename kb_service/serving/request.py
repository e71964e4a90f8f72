"""Search input (a query string, a JSON body, CLI flags) validated into a `SearchRequest` and a `HitShape`.

One pydantic model, `SearchParameters`, is both the validation and the API's published schema (the OpenAPI
document is generated from it), and the HTTP API and the CLI both call `parse_search`, so a bad parameter gets
the same message naming the same path (`filters[1].range.confidence.gte`) and code on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    FiniteFloat,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kb_service.config import ServiceConfig
from kb_service.errors import InputError
from kb_service.records import KNOWN_FIELDS, MAX_TEXT_LENGTH, RecordError, normalise_timestamp
from kb_service.validation import FILTER_KINDS, Flag, Integer, input_error
from scoring.plan import (
    DATE_FIELDS,
    FACET_FIELDS,
    FLAG_FIELDS,
    KEYWORD_FIELDS,
    NUMBER_FIELDS,
    SORT_FIELDS,
    BoolFilter,
    ExistsFilter,
    Filter,
    Mode,
    RangeFilter,
    SortKey,
    TermFilter,
)
from scoring.planner import SearchRequest

MAX_FILTER_CLAUSES = 64  # leaf clauses in one request, however nested
MAX_FILTER_DEPTH = 8
MAX_TERMS = 1024  # values of one `terms` clause
MAX_TAG_LENGTH = 64
MAX_LISTED = 32  # names in `fields` or `facets` (repeats are allowed and count once)

SORT_CHOICES = tuple(f"{field}{order}" for field in (*SORT_FIELDS, "_score") for order in ("", ":asc", ":desc"))
if TYPE_CHECKING:  # Literals built from the plan's field lists, which a type checker cannot follow
    ExistsField: TypeAlias = str
    FacetField: TypeAlias = str
    RecordField: TypeAlias = str
    SortField: TypeAlias = str
    SortText: TypeAlias = str
else:
    ExistsField = Literal[*KEYWORD_FIELDS, *NUMBER_FIELDS, *DATE_FIELDS, "expert_verified"]
    FacetField = Literal[*FACET_FIELDS]
    RecordField = Literal[*sorted(KNOWN_FIELDS)]
    SortField = Literal[*SORT_FIELDS, "_score"]
    SortText = Literal[*SORT_CHOICES]
HighlightField = Literal["knowledge", "attribute", "value"]
HIGHLIGHTED: tuple[HighlightField, ...] = ("knowledge", "attribute", "value")


def _listed(value: Any) -> Any:
    """A list, or the comma-separated text of one (the GET form); null and "" mean none."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value




class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OneField(_Strict):
    """An object naming exactly one field, as Elasticsearch's `term` and `range` bodies do."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1})

    @model_validator(mode="after")
    def _one_field(self):
        if len(self.model_fields_set) != 1:
            raise PydanticCustomError("one_field", "expected exactly one field")
        return self

    def field_and_value(self) -> tuple[str, Any]:
        (field,) = self.model_fields_set
        return field, getattr(self, field)


Keyword = Annotated[str, Field(max_length=MAX_TEXT_LENGTH)]
FlagValue = Literal[0, 1] | bool
DateText = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"},
                                description="'YYYY-MM-DD HH:MM:SS', 'YYYY-MM-DD' or ISO 8601")]
Keywords = Annotated[list[Keyword], Field(min_length=1, max_length=MAX_TERMS)]


def _fields(annotation: Any) -> dict[str, Any]:
    """Pydantic field definitions: every keyword field of the record typed `annotation`, and the flag."""
    return {name: (annotation, None) for name in KEYWORD_FIELDS}


def _one_field_model(name: str, **fields: Any) -> type[_OneField]:
    """A model with one optional field per name, of which a request must set exactly one."""
    return create_model(name, __base__=_OneField, **fields)


if TYPE_CHECKING:  # models built from the field lists: a type checker knows them as their base
    TermFields: TypeAlias = _OneField
    TermsFields: TypeAlias = _OneField
else:
    TermFields = _one_field_model("TermFields", **_fields(Keyword), expert_verified=(FlagValue, None))
    TermsFields = _one_field_model("TermsFields", **_fields(Keywords), expert_verified=(
        Annotated[list[FlagValue], Field(min_length=1, max_length=2)], None))


class TermClause(_Strict):
    """`{"term": {"attribute": "人口"}}`: the field equals the value (keywords exactly, flags 0/1)."""

    term: TermFields


class TermsClause(_Strict):
    """`{"terms": {"category": ["城市", "国家"]}}`: the field equals one of the values."""

    terms: TermsFields


class _Bounds(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    @model_validator(mode="after")
    def _some_bound(self):
        if not self.model_fields_set:
            raise PydanticCustomError("required", "expected at least one of gt, gte, lt, lte")
        return self


class NumberBounds(_Bounds):
    gt: FiniteFloat = None  # type: ignore[assignment]
    gte: FiniteFloat = None  # type: ignore[assignment]
    lt: FiniteFloat = None  # type: ignore[assignment]
    lte: FiniteFloat = None  # type: ignore[assignment]


class DateBounds(_Bounds):
    gt: DateText = None  # type: ignore[assignment]
    gte: DateText = None  # type: ignore[assignment]
    lt: DateText = None  # type: ignore[assignment]
    lte: DateText = None  # type: ignore[assignment]


if TYPE_CHECKING:
    RangeFields: TypeAlias = _OneField
else:
    RangeFields = _one_field_model("RangeFields", **{name: (NumberBounds, None) for name in NUMBER_FIELDS},
                               **{name: (DateBounds, None) for name in DATE_FIELDS})


class RangeClause(_Strict):
    """`{"range": {"confidence": {"gte": 0.8}}}`: the field lies within the bounds (missing never does)."""

    range: RangeFields


class ExistsBody(_Strict):
    field: ExistsField


class ExistsClause(_Strict):
    """`{"exists": {"field": "expires_at"}}`: the record holds a value in the field."""

    exists: ExistsBody


class BoolBody(_Strict):
    """Every `must`, none of `must_not`, and at least one `should` when any are given."""

    must: list[FilterClause] = Field(default_factory=list, max_length=MAX_FILTER_CLAUSES)
    should: list[FilterClause] = Field(default_factory=list, max_length=MAX_FILTER_CLAUSES)
    must_not: list[FilterClause] = Field(default_factory=list, max_length=MAX_FILTER_CLAUSES)


class BoolClause(_Strict):
    """`{"bool": {"must": [...], "should": [...], "must_not": [...]}}`."""

    bool: BoolBody


def _filter_kind(value: Any) -> str | None:
    """Which clause an object is, by its one key (as Elasticsearch's query DSL names them)."""
    if isinstance(value, dict) and len(value) == 1:
        kind = next(iter(value))
        return kind if kind in FILTER_KINDS else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


FilterClause = Annotated[
    Annotated[TermClause, Tag("term")] | Annotated[TermsClause, Tag("terms")] | Annotated[RangeClause, Tag("range")]
    | Annotated[ExistsClause, Tag("exists")] | Annotated[BoolClause, Tag("bool")],
    Discriminator(_filter_kind, custom_error_type="invalid_filter",
                  custom_error_message="expected an object with one key: term, terms, range, exists or bool"),
]
BoolBody.model_rebuild()


class SortBody(_Strict):
    field: SortField
    order: Literal["asc", "desc"] = "asc"




SortChoice = Annotated[Annotated[SortText, Tag("text")] | Annotated[SortBody, Tag("body")],
                       Discriminator(lambda v: "body" if isinstance(v, dict | SortBody) else "text")]


class HighlightBody(_Strict):
    """Which fields to mark and the tags around each matched span (the text between is HTML-escaped)."""

    fields: list[HighlightField] = Field(default_factory=lambda: list(HIGHLIGHTED))
    pre_tag: str = Field("<em>", max_length=MAX_TAG_LENGTH)
    post_tag: str = Field("</em>", max_length=MAX_TAG_LENGTH)


class SearchParameters(BaseModel):
    """`/search`'s parameters: a JSON body on POST, the query string on GET (lists comma-separated there;
    `filters` only in a body). Unknown parameters are ignored and null means the default."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    q: str = Field(validation_alias=AliasChoices("q", "query"), description="the query text")
    size: Integer | None = Field(None, description="hits to return (1 to search.max_size; default "
                                                   "search.default_size)")
    offset: Integer | None = Field(None, alias="from", description="hits to skip (0 to search.max_offset)")
    category: Annotated[list[str], BeforeValidator(_listed)] = Field(
        default_factory=list, max_length=MAX_TERMS, description="only these categories (a shorthand of a terms filter)")
    mode: Annotated[Mode | None, BeforeValidator(_empty_is_none)] = None
    explain: Flag = False
    filters: list[FilterClause] = Field(default_factory=list, max_length=MAX_FILTER_CLAUSES,
                                        description="filter clauses, all of which a hit passes")
    sort: Annotated[SortChoice | None, BeforeValidator(_empty_is_none)] = Field(
        None, description="`field`, `field:desc` or {field, order}: confidence, timestamps, knowledge, attribute, "
                          "category or kid, missing values last, ties by score; default: by score")
    fields: Annotated[Annotated[list[RecordField], Field(max_length=MAX_LISTED)] | None,
                      BeforeValidator(lambda v: None if v is None else _listed(v))] = Field(
        None, description="the record fields each hit carries (default all)")
    highlight: Annotated[Annotated[Flag, Tag("flag")] | Annotated[HighlightBody, Tag("body")], Discriminator(
        lambda v: "body" if isinstance(v, dict | HighlightBody) else "flag")] = Field(
        False, description="true, or {fields, pre_tag, post_tag}: the matched spans of knowledge, attribute, value")
    facets: Annotated[list[FacetField], BeforeValidator(_listed)] = Field(
        default_factory=list, max_length=MAX_LISTED, description="fields to count over the matching records")
    facet_size: Integer = Field(10, ge=1, le=100, description="values per facet")

    @field_validator("q", mode="before")
    @classmethod
    def _query_text(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise PydanticCustomError("required", "required: the query text")
        return value


@dataclass(frozen=True)
class Highlight:
    fields: tuple[str, ...]
    pre_tag: str
    post_tag: str


@dataclass(frozen=True)
class HitShape:
    """How hits are presented: which record fields they carry (None: all) and what to highlight."""

    fields: tuple[str, ...] | None = None
    highlight: Highlight | None = None


def _date(value: str | None, path: str) -> str | None:
    if value is None:
        return None
    try:
        return normalise_timestamp(value)
    except RecordError as err:
        raise InputError(err.message, path, code="not_a_date") from None


def _term_value(field: str, value: str | int | bool) -> str | int:
    return int(value) if field in FLAG_FIELDS else value


class _Clauses:
    """Counts leaf clauses and depth while a filter tree becomes plan filters."""

    def __init__(self):
        self.leaves = 0

    def convert(self, clause: BaseModel, path: str, depth: int) -> Filter:
        if depth > MAX_FILTER_DEPTH:
            raise InputError(f"bool clauses nest deeper than {MAX_FILTER_DEPTH} levels", path, code="too_deep")
        if isinstance(clause, BoolClause):
            body = clause.bool
            return BoolFilter(**{key: tuple(self.convert(part, f"{path}.bool.{key}[{n}]", depth + 1)
                                            for n, part in enumerate(getattr(body, key)))
                                 for key in ("must", "should", "must_not")})
        self.leaves += 1
        if self.leaves > MAX_FILTER_CLAUSES:
            raise InputError(f"more than {MAX_FILTER_CLAUSES} filter clauses", path, code="too_many")
        if isinstance(clause, TermClause):
            field, value = clause.term.field_and_value()
            return TermFilter(field, (_term_value(field, value),))
        if isinstance(clause, TermsClause):
            field, values = clause.terms.field_and_value()
            return TermFilter(field, tuple(_term_value(field, v) for v in values))
        if isinstance(clause, RangeClause):
            field, bounds = clause.range.field_and_value()
            where = f"{path}.range.{field}"
            converted = {name: getattr(bounds, name) for name in ("gt", "gte", "lt", "lte")}
            if field in DATE_FIELDS:
                converted = {name: _date(value, f"{where}.{name}") for name, value in converted.items()}
            return RangeFilter(field, **converted)
        assert isinstance(clause, ExistsClause)
        return ExistsFilter(clause.exists.field)


def _sort(value: str | SortBody | None) -> SortKey | None:
    if value is None:
        return None
    if isinstance(value, str):
        field, _, order = value.partition(":")
        value = SortBody(field=field, order="desc" if order == "desc" else "asc")
    return None if value.field == "_score" else SortKey(value.field, value.order == "desc")


def parse_search(params: dict, config: ServiceConfig) -> tuple[SearchRequest, HitShape]:
    """Validate search parameters into the plan's request and the hits' presentation."""
    try:
        parsed = SearchParameters.model_validate(params)
    except ValidationError as err:
        raise input_error(err) from None
    limits = config.search
    size = limits.default_size if parsed.size is None else parsed.size
    offset = parsed.offset or 0
    if not 1 <= size <= limits.max_size:
        raise InputError(f"must be between 1 and {limits.max_size}", "size", code="out_of_range")
    if not 0 <= offset <= limits.max_offset:
        raise InputError(f"must be between 0 and {limits.max_offset}", "from", code="out_of_range")
    clauses = _Clauses()
    filters = tuple(clauses.convert(clause, f"filters[{n}]", 1) for n, clause in enumerate(parsed.filters))
    highlight = parsed.highlight
    if highlight is True:
        highlight = HighlightBody()
    request = SearchRequest(
        query=parsed.q, size=size, offset=offset, categories=tuple(parsed.category), explain=parsed.explain,
        mode=parsed.mode, filters=filters, sort=_sort(parsed.sort), facets=tuple(dict.fromkeys(parsed.facets)),
        facet_size=parsed.facet_size)
    shape = HitShape(
        fields=None if parsed.fields is None else tuple(dict.fromkeys(parsed.fields)),
        highlight=Highlight(tuple(highlight.fields), highlight.pre_tag, highlight.post_tag)
        if isinstance(highlight, HighlightBody) else None)
    return request, shape
