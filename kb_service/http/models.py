"""The API's answers (and the records it takes) as pydantic models: the OpenAPI document describes them
and the typed client (`kb_service.client`) reads answers through them, so the server's description and the
client's types are one definition. Flask-free, so the client imports it alone."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from kb_service.records import MAX_KID_LENGTH, MAX_TEXT_LENGTH

MAX_REPORTED = 100  # rejected records listed in one ingest answer (all are counted)

ERROR_CODES = ("invalid_parameter, invalid_json, too_deep, not_finite, not_an_integer, out_of_range, invalid_choice, "
               "invalid_filter, unknown_field, required, not_a_date, unauthorized, role_disabled, locked_out, "
               "rate_limited, not_found, method_not_allowed, body_too_large, conflict, reload_running, not_ready, "
               "deadline_exceeded, engine_unavailable, state_unavailable, internal, …")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: int
    code: str = Field(description=f"machine-readable: {ERROR_CODES}")
    message: str
    field: str | None = Field(None, description="the request field at fault, as a path (filters[1].range.confidence)")
    retry_after_s: int | None = Field(None, description="with 429, as the Retry-After header")


class ErrorAnswer(BaseModel):
    error: ErrorDetail


class Record(BaseModel):
    """A knowledge record; a hit carries only the fields `fields` asked for."""

    model_config = ConfigDict(populate_by_name=True)

    kid: str | None = None
    knowledge: str | None = None
    attribute: str | None = None
    value: str | None = None
    category: str | None = None
    confidence: float | None = None
    ref: str | None = None
    available: int | None = None
    deleted: int | None = Field(None, alias="del")
    create_timestamp: str | None = None
    update_timestamp: str | None = None
    expert_verified: int | None = None
    expires_at: str | None = None


class ExplainStep(BaseModel):
    stage: Literal["engine", "rescore", "expansion"]
    name: str
    raw: float
    weight: float
    contribution: float


class Hit(Record):
    rank: int
    score: float
    components: dict[str, float]
    explain: list[ExplainStep] | None = None
    text_clauses: dict[str, float] | None = None
    highlight: dict[str, str] | None = Field(None, description="matched spans of knowledge, attribute, value, "
                                                                "marked with the tags, the rest HTML-escaped")


class FacetValue(BaseModel):
    value: str
    count: int


class LinkedSpan(BaseModel):
    """A query span linked to an entity or attribute, with the probability that it is meant."""

    text: str
    name: str
    tokens: list[str]
    start: int
    end: int
    confidence: float = Field(ge=0, le=1)
    evidence: dict[str, float]


class ParsedQuery(BaseModel):
    original: str
    normalised: str
    tokens: list[str]
    content_tokens: list[str]
    entities: list[LinkedSpan]
    attributes: list[LinkedSpan]
    intent: Literal["attribute_lookup", "entity_overview", "open_question"]
    intent_probability: float
    categories: dict[str, float]
    category_evidence: float
    embedding_text: str
    overview: float


class SearchAnswer(BaseModel):
    query_id: str = Field(description="this search's id: the front end posts /v1/events under it")
    query: str
    total: int = Field(description="records in the matching set: a text clause matched them, or their vector is "
                                   "among the scoring.candidates nearest, within the filters")
    total_relation: Literal["eq", "gte"]
    took_ms: float
    stages_ms: dict[str, float] | None = None
    index_version: str
    config_version: str
    mode: Literal["exact", "fast"]
    hits: list[Hit]
    facets: dict[str, list[FacetValue]] | None = None
    parsed_query: ParsedQuery | None = None


class SuggestionOut(BaseModel):
    text: str = Field(description="the entity's name as stored")
    matched: str = Field(description="the key the typed text starts: the name folded, its pinyin or initials, "
                                     "or another name of the entity")
    how: Literal["name", "pinyin", "initials", "alias"]
    typo: bool = Field(description="matched only with one character changed, added, dropped or swapped")
    records: int
    score: float


class Suggestions(BaseModel):
    query: str
    suggestions: list[SuggestionOut]


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH, pattern="\\S")]
FlagIn = Literal[0, 1] | bool | None
When = Annotated[str | None, Field(json_schema_extra={"format": "date-time"},
                                   description="'YYYY-MM-DD HH:MM:SS', 'YYYY-MM-DD' or ISO 8601")]


class RecordIn(BaseModel):
    """A record as `kb load` reads one (the same validation runs on it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kid: Annotated[str, Field(min_length=1, max_length=MAX_KID_LENGTH, pattern="\\S")]
    knowledge: Text
    attribute: Text
    value: Text
    category: Text
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None
    ref: Annotated[str, Field(max_length=MAX_TEXT_LENGTH)] | None = None
    available: FlagIn = None
    deleted: FlagIn = Field(None, alias="del")
    expert_verified: FlagIn = None
    create_timestamp: When = None
    update_timestamp: When = None
    expires_at: When = None


class RejectedRecord(BaseModel):
    line: int = Field(description="the line of the NDJSON body, or the 1-based position in the JSON array")
    field: str | None
    code: str
    message: str


class IngestReport(BaseModel):
    received: int
    accepted: int
    status: Literal["pending", "approved"]
    inserted: int
    changed: int = Field(description="records whose content changed: back to review")
    unchanged: int = Field(description="records stored before with the same content: nothing changed")
    rejected_count: int
    rejected: list[RejectedRecord] = Field(description=f"the first {MAX_REPORTED} rejected records")


class Accepted(BaseModel):
    accepted: int
