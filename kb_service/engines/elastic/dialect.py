"""What differs between Elasticsearch and OpenSearch, in one place; everything else is shared.

Both speak the same REST API for what the engine does (indices, aliases, bulk, search, named queries,
`script_score`), so the engine talks REST through `Cluster.request` and asks the dialect only for: the Python
client, how that client reports failures, the vector field's mapping, the approximate-knn search and how
painless reads a document's vector.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kb_service import logs
from kb_service.config import ElasticsearchConfig, EngineKind
from kb_service.engines.base import SEARCH_DEADLINE, EngineError, EngineUnavailableError, seconds_left
from scoring.expressions import OPENSEARCH_PAINLESS_VARIABLES, PAINLESS_VARIABLES

JSON = {"accept": "application/json", "content-type": "application/json"}
NDJSON = {"accept": "application/json", "content-type": "application/x-ndjson"}


log = logging.getLogger(__name__)
MAX_SECRET_BYTES = 65_536  # a password or API key file; anything longer is not one


class ClusterRequestError(EngineError):
    """The cluster refused a request as malformed (a 4xx other than the ones the caller expects)."""


class ClusterSettingError(EngineUnavailableError):
    """The cluster cannot be used with the configured connection settings (a credential file that cannot be
    read, a certificate not trusted, credentials refused); the message names the setting to fix."""


@dataclass(frozen=True)
class Connection:
    """How to reach and authenticate to the cluster, with every secret resolved: `secrets` (USERNAME, PASSWORD,
    API_KEY from the runtime's environment) win over a `*_file` setting, which wins over the value in the
    config."""

    hosts: tuple[str, ...]
    ca_certs: str | None
    verify_certs: bool
    client_cert: str | None
    client_key: str | None
    basic_auth: tuple[str, str] | None
    api_key: str | None

    @classmethod
    def resolve(cls, kind: EngineKind, settings: ElasticsearchConfig,
                secrets: Mapping[str, str] | None = None) -> Connection:
        prefix = "KB_OS_" if kind is EngineKind.OPENSEARCH else "KB_ES_"
        secrets = secrets or {}
        hosts = settings.hosts
        for host in hosts:
            if urlsplit(host if "//" in host else f"//{host}").password is not None:
                raise ClusterSettingError("elasticsearch.hosts: a node URL carries a password; set "
                                          "elasticsearch.username and password_file (URLs reach logs)")
        for name in ("ca_certs", "client_cert", "client_key"):
            path = getattr(settings, name)
            if path is not None and not os.access(path, os.R_OK):
                raise ClusterSettingError(f"elasticsearch.{name}: cannot read {path}")
        username = secrets.get("USERNAME") or settings.username
        password = secrets.get("PASSWORD") or _secret(settings, "password")
        api_key = secrets.get("API_KEY") or _secret(settings, "api_key")
        if (username is None) != (password is None):
            raise ClusterSettingError("elasticsearch.username and elasticsearch.password go together "
                                      f"(password_file or ${prefix}PASSWORD)")
        if api_key is not None and username is not None:
            raise ClusterSettingError("elasticsearch.api_key: set an API key or username and password, not both")
        if api_key is not None and kind is EngineKind.OPENSEARCH:
            raise ClusterSettingError("elasticsearch.api_key: OpenSearch has no API keys; use username and "
                                      "password or a client certificate")
        for secret in (password, api_key):
            if secret:
                logs.mask(secret)
        if not settings.verify_certs:
            log.warning("elasticsearch.verify_certs is false: the cluster's TLS certificate is not checked "
                        "(anyone on the path can read and change every request)")
        return cls(hosts, settings.ca_certs, settings.verify_certs, settings.client_cert, settings.client_key,
                   (username, password) if username is not None and password is not None else None, api_key)


def _secret(settings: ElasticsearchConfig, name: str) -> str | None:
    """A credential from a file (first line, at most MAX_SECRET_BYTES) or the config."""
    path = getattr(settings, f"{name}_file")
    if path is None:
        value = getattr(settings, name)
        return str(value) if value is not None else None
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as err:
        raise ClusterSettingError(f"elasticsearch.{name}_file: cannot read {path}: {err.strerror}") from None
    text = data.decode("utf-8", "replace").strip() if len(data) <= MAX_SECRET_BYTES else ""
    if not text or "\n" in text:
        raise ClusterSettingError(f"elasticsearch.{name}_file: {path} must hold the {name} alone, on one line")
    return text


class Dialect:
    """The engine-specific parts; subclasses exist for Elasticsearch and OpenSearch."""

    kind: EngineKind
    name: str
    painless_variables: dict[str, str]
    named_scores_in_msearch = True  # `include_named_queries_score` honoured by _msearch, not only _search

    def client(self, settings: ElasticsearchConfig, connection: Connection) -> Any:
        raise NotImplementedError

    def perform(self, client: Any, method: str, path: str, params: dict | None, body: Any, headers: dict,
                timeout: float | None, retry: bool = True) -> Any:
        """Send one request (`retry` off: a probe that must answer at once); returns the decoded body, raises
        the client's own errors."""
        raise NotImplementedError

    def status_of(self, error: Exception) -> int | None:
        """The HTTP status of a client error; None when no response came back (connection, timeout)."""
        raise NotImplementedError

    def is_client_error(self, error: Exception) -> bool:
        raise NotImplementedError

    def is_tls_error(self, error: Exception) -> bool:
        """A connection that failed in the TLS handshake (certificate not trusted, expired, wrong host)."""
        raise NotImplementedError

    def parallel_bulk(self, client: Any, actions: Iterable[dict], **options: Any) -> Iterable[tuple[bool, dict]]:
        raise NotImplementedError

    def vector_mapping(self, shipped: dict, dims: int, settings: ElasticsearchConfig) -> dict:
        """The vector field for `dims`-d vectors, from the one mappings/knowledge.json ships (Elasticsearch's
        `dense_vector`, whose HNSW parameters both engines use)."""
        raise NotImplementedError

    def index_settings(self) -> dict:
        """Settings a version index needs on this engine beyond the shared ones."""
        return {}

    def knn_search(self, vector: list[float], k: int, num_candidates: int, filters: list[dict]) -> dict:
        """A search body (without `size`) finding the `k` nearest vectors among documents passing `filters`;
        hits score (1 + cos) / 2 on both engines."""
        raise NotImplementedError


class ElasticsearchDialect(Dialect):
    kind = EngineKind.ELASTICSEARCH
    name = "Elasticsearch"
    painless_variables = PAINLESS_VARIABLES

    def client(self, settings: ElasticsearchConfig, connection: Connection) -> Any:
        from elastic_transport.client_utils import DEFAULT
        from elasticsearch import Elasticsearch

        return Elasticsearch(list(connection.hosts), request_timeout=settings.request_timeout_s,
                             max_retries=settings.max_retries, retry_on_timeout=settings.max_retries > 0,
                             ca_certs=connection.ca_certs or DEFAULT, verify_certs=connection.verify_certs,
                             ssl_show_warn=connection.verify_certs, client_cert=connection.client_cert or DEFAULT,
                             client_key=connection.client_key or DEFAULT, basic_auth=connection.basic_auth,
                             api_key=connection.api_key)

    def perform(self, client: Any, method: str, path: str, params: dict | None, body: Any, headers: dict,
                timeout: float | None, retry: bool = True) -> Any:
        if timeout is not None:
            client = client.options(request_timeout=timeout, **({} if retry else {"max_retries": 0}))
        return client.perform_request(method, path, params=params, headers=headers, body=body).body

    def status_of(self, error: Exception) -> int | None:
        return getattr(error, "status_code", None) if self.is_client_error(error) else None

    def is_client_error(self, error: Exception) -> bool:
        from elastic_transport import TransportError
        from elasticsearch import ApiError

        return isinstance(error, ApiError | TransportError)

    def is_tls_error(self, error: Exception) -> bool:
        from elastic_transport import TlsError

        return isinstance(error, TlsError)

    def parallel_bulk(self, client: Any, actions: Iterable[dict], **options: Any) -> Iterable[tuple[bool, dict]]:
        from elasticsearch import helpers

        return helpers.parallel_bulk(client, actions, **options)

    def vector_mapping(self, shipped: dict, dims: int, settings: ElasticsearchConfig) -> dict:
        mapping = {**shipped, "dims": dims, "index_options": {**shipped["index_options"],
                                                              "type": settings.vector_index_type}}
        if "hnsw" not in settings.vector_index_type:
            mapping["index_options"] = {"type": settings.vector_index_type}
        return mapping

    def knn_search(self, vector: list[float], k: int, num_candidates: int, filters: list[dict]) -> dict:
        return {"knn": {"field": "vector", "query_vector": vector, "k": k, "num_candidates": max(k, num_candidates),
                        "filter": filters}}


class OpenSearchDialect(Dialect):
    kind = EngineKind.OPENSEARCH
    name = "OpenSearch"
    painless_variables = OPENSEARCH_PAINLESS_VARIABLES
    named_scores_in_msearch = False  # 2.19 refuses the parameter on _msearch and ignores it in the body

    def client(self, settings: ElasticsearchConfig, connection: Connection) -> Any:
        from opensearchpy import OpenSearch

        return OpenSearch(list(connection.hosts), timeout=settings.request_timeout_s,
                          max_retries=settings.max_retries, retry_on_timeout=settings.max_retries > 0,
                          ca_certs=connection.ca_certs, verify_certs=connection.verify_certs,
                          ssl_show_warn=connection.verify_certs, client_cert=connection.client_cert,
                          client_key=connection.client_key, http_auth=connection.basic_auth)

    def perform(self, client: Any, method: str, path: str, params: dict | None, body: Any, headers: dict,
                timeout: float | None, retry: bool = True) -> Any:
        if isinstance(body, str):
            body = body.encode("utf-8")
        return client.transport.perform_request(method, path, params=params, body=body, headers=headers,
                                                timeout=timeout)

    def status_of(self, error: Exception) -> int | None:
        status = getattr(error, "status_code", None)
        return status if isinstance(status, int) else None

    def is_client_error(self, error: Exception) -> bool:
        from opensearchpy.exceptions import TransportError

        return isinstance(error, TransportError)

    def is_tls_error(self, error: Exception) -> bool:
        from opensearchpy.exceptions import SSLError

        return isinstance(error, SSLError)

    def parallel_bulk(self, client: Any, actions: Iterable[dict], **options: Any) -> Iterable[tuple[bool, dict]]:
        from opensearchpy import helpers

        return helpers.parallel_bulk(client, actions, **options)

    def vector_mapping(self, shipped: dict, dims: int, settings: ElasticsearchConfig) -> dict:
        hnsw = shipped["index_options"]
        return {"type": "knn_vector", "dimension": dims,
                "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil",
                           "parameters": {"m": hnsw["m"], "ef_construction": hnsw["ef_construction"]}}}

    def index_settings(self) -> dict:
        return {"knn": True}

    def knn_search(self, vector: list[float], k: int, num_candidates: int, filters: list[dict]) -> dict:
        return {"query": {"knn": {"vector": {"vector": vector, "k": k, "filter": {"bool": {"filter": filters}},
                                             "method_parameters": {"ef_search": max(k, num_candidates)}}}}}


DIALECTS: dict[EngineKind, Dialect] = {d.kind: d for d in (ElasticsearchDialect(), OpenSearchDialect())}


class Cluster:
    """REST requests to one cluster through the dialect's client, with one failure model for both engines:
    no answer, a 5xx or a 429 is `EngineUnavailableError` (the API's 503); another 4xx is ClusterRequestError
    unless the caller named it in `ignore`, which returns None instead."""

    def __init__(self, dialect: Dialect, settings: ElasticsearchConfig, secrets: Mapping[str, str]):
        self.dialect = dialect
        self.client = dialect.client(settings, Connection.resolve(dialect.kind, settings, secrets))
        self.timeout_s = settings.request_timeout_s

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                ignore: tuple[int, ...] = (), timeout: float | None = None, headers: dict | None = None) -> Any:
        params = {k: _param(v) for k, v in (params or {}).items()}
        probe = timeout is not None  # an explicit timeout is a probe: no retries
        if not probe and SEARCH_DEADLINE.get() is not None:
            timeout = seconds_left(self.timeout_s)
        headers = headers or (JSON if body is not None else {"accept": "application/json"})
        try:
            return self.dialect.perform(self.client, method, path, params or None, body, headers, timeout,
                                        retry=not probe)
        except Exception as err:
            if not self.dialect.is_client_error(err):
                raise
            status = self.dialect.status_of(err)
            if status in ignore:
                return None
            if status is None and self.dialect.is_tls_error(err):
                raise ClusterSettingError(f"{self.dialect.name}'s TLS certificate {_tls_problem(err)}") from err
            if status == 401:
                raise ClusterSettingError(f"{self.dialect.name} refused the credentials (401): check "
                                          "elasticsearch.username and password, or api_key") from err
            if status == 403 and "security_exception" in str(err):
                raise ClusterSettingError(f"{self.dialect.name} does not let elasticsearch.username do "
                                          f"{method} {path} (403): grant its role this index's privileges") from err
            raise _failure(self.dialect.name, method, path, status, err) from err

    def msearch(self, index: str, searches: list[dict], params: dict | None = None) -> list[dict]:
        """Several searches in one request (one request each where the engine's _msearch would drop a
        parameter); a failed one raises as a failed request would."""
        if not self.dialect.named_scores_in_msearch and params and "include_named_queries_score" in params:
            return [self.request("POST", f"/{index}/_search", search, params) for search in searches]
        lines = "".join(json.dumps(line, ensure_ascii=False) + "\n" for search in searches
                        for line in ({"index": index}, search))
        response = self.request("POST", "/_msearch", lines, params, headers=NDJSON)
        for answer in response["responses"]:
            if "error" in answer:
                raise _failure(self.dialect.name, "POST", f"/{index}/_msearch", answer.get("status", 500),
                               answer["error"])
        return response["responses"]


EXPIRED, HOST_MISMATCH = 10, 62  # OpenSSL's X509_V_ERR_CERT_HAS_EXPIRED and X509_V_ERR_HOSTNAME_MISMATCH


def _tls_problem(error: BaseException) -> str:
    """What is wrong with the node's certificate, in the verifier's words ("self-signed certificate in
    certificate chain", found down the chain of causes the clients wrap them in), and the setting to fix."""
    import ssl

    seen: BaseException | None = error
    while seen is not None:
        for candidate in (seen, *getattr(seen, "args", ())):
            if isinstance(candidate, ssl.SSLCertVerificationError):
                reason = candidate.verify_message or str(candidate)
                if candidate.verify_code == EXPIRED:
                    return (f"has expired ({reason}): renew the node's certificate (elasticsearch.verify_certs: "
                            "false skips the check, on a throwaway node only)")
                if candidate.verify_code == HOST_MISMATCH:
                    return f"does not name the host ({reason}): use the name it was issued for in elasticsearch.hosts"
                return f"is not trusted ({reason}): set elasticsearch.ca_certs to the CA that signed it"
        seen = seen.__cause__ or seen.__context__
    return "could not be checked (the TLS handshake failed): check elasticsearch.hosts and elasticsearch.ca_certs"


def _param(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _failure(engine: str, method: str, path: str, status: int | None, detail: Any) -> Exception:
    if status is None:
        return EngineUnavailableError(f"{engine} did not answer {method} {path}: {detail}")
    if status >= 500 or status == 429:
        return EngineUnavailableError(f"{engine} failed {method} {path} ({status}): {detail}")
    return ClusterRequestError(f"{engine} refused {method} {path} ({status}): {detail}")
