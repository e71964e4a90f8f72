"""A typed Python client of the HTTP API: requests are validated by the same models the server validates
with, answers are read into the models the served OpenAPI document is generated from, and errors raise
`ApiError` with the server's machine-readable code.

    client = KbClient("http://localhost:8000", api_key=...)
    answer = client.search("杭州的人口", filters=[{"range": {"confidence": {"gte": 0.8}}}], facets=["category"])
    answer.hits[0].value, answer.facets["category"][0].count

`missing_operations()` compares the client with a running server's /openapi.json, so a client and a server
of different releases can tell whether they still agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

import requests
from pydantic import BaseModel

from kb_service.http.models import IngestReport, ParsedQuery, Record, SearchAnswer, Suggestions
from kb_service.serving.request import SearchParameters
from kb_service.validation import validated

API = "/v1"
A = TypeVar("A", bound=BaseModel)
OPERATIONS = (("post", "/search"), ("get", "/suggest"), ("get", "/understand"), ("get", "/knowledge/{kid}"),
              ("post", "/records"), ("post", "/events"), ("post", "/admin/reload"), ("get", "/admin/versions"))


class ApiError(Exception):
    """An error answer: its HTTP status, the server's `code`, message and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, body: dict | None = None):
        super().__init__(f"{status} {code}: {field + ': ' if field else ''}{message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body or {}


class KbClient:
    """One service's API over a keep-alive session; `api_key` is sent as X-API-Key."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 10.0,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["X-API-Key"] = api_key

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.base_url}{API}{path}", timeout=self.timeout_s, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise ApiError(response.status_code, "unexpected", response.text[:200]) from None
            raise ApiError(response.status_code, error.get("code", "unknown"), error.get("message", ""),
                           error.get("field"), error)
        return response.json()

    def _read(self, model: type[A], method: str, path: str, **kwargs: Any) -> A:
        return model.model_validate(self._call(method, path, **kwargs))

    def search(self, q: str, **parameters: Any) -> SearchAnswer:
        """POST /v1/search with any of SearchParameters' fields (`offset` for `from`); checked here first,
        so a bad parameter fails before it is sent (InputError) with the path and code the server would give."""
        if "offset" in parameters:
            parameters["from"] = parameters.pop("offset")
        body = {"q": q, **{k: v for k, v in parameters.items() if v is not None}}
        validated(SearchParameters, body)
        return self._read(SearchAnswer, "POST", "/search", json=body)

    def suggest(self, q: str, size: int = 5) -> Suggestions:
        return self._read(Suggestions, "GET", "/suggest", params={"q": q, "size": size})

    def understand(self, q: str) -> ParsedQuery:
        return self._read(ParsedQuery, "GET", "/understand", params={"q": q})

    def record(self, kid: str) -> Record | None:
        """One record by kid; None when there is none."""
        try:
            return self._read(Record, "GET", f"/knowledge/{requests.utils.quote(kid, safe='')}")
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def ingest(self, records: Iterable[dict]) -> IngestReport:
        """POST /v1/records as NDJSON (the server reads it line by line); needs an ingest or admin key."""
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        return self._read(IngestReport, "POST", "/records", data=lines.encode("utf-8"),
                          headers={"Content-Type": "application/x-ndjson"})

    def events(self, events: list[dict]) -> int:
        """Impressions and clicks under a search's query_id; the number stored."""
        return int(self._call("POST", "/events", json={"events": events})["accepted"])

    def reload(self, wait: bool = True, force: bool = False) -> dict:
        """A gated reload (admin key): with `wait`, the finished run."""
        return self._call("POST", "/admin/reload", json={"wait": wait, "force": force})

    def missing_operations(self) -> list[str]:
        """The operations this client calls that the server's /openapi.json does not describe."""
        response = self.session.get(f"{self.base_url}/openapi.json", timeout=self.timeout_s)
        response.raise_for_status()
        paths = response.json()["paths"]
        return [f"{method.upper()} {API}{path}" for method, path in OPERATIONS
                if method not in paths.get(f"{API}{path}", {})]
