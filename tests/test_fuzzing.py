"""API fuzzing: schemathesis reads the OpenAPI document a real `kb serve` serves at /openapi.json (generated
from the models that validate the requests), generates requests from it, valid and invalid, for every
operation (admin and console ones with and without a key) and sends them to that server over HTTP, its
lockout on as deployed.

Every response must conform to the schema (status documented, body shape), none may be a 5xx or take over
5 s, a request the schema allows must not be refused, and every 4xx must be the JSON error shape with a
machine-readable code, naming what was wrong (a console page says it on the page).
The API is lenient by design (unknown parameters are ignored, null means the default), so schemathesis's
check that invalid requests are refused is left out. The example count is bounded for the quick suite
(KB_FUZZ_EXAMPLES raises it for a longer run)."""

from __future__ import annotations

import os
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import ignored_auth, negative_data_rejection, positive_data_acceptance

from kb_service.http.auth import new_key
from tests.conftest import config_text, loaded, running_server

EXAMPLES = int(os.environ.get("KB_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory, capital_kb_file):
    """A real server over the capital KB whose admin key the tests know; reloads read the same KB file. The
    key is used once first, as an operator would, so the keyless guesses that follow cannot lock it out."""
    workdir = tmp_path_factory.mktemp("fuzz")
    key, digest = new_key()
    config_path = workdir / "config.yaml"
    config_path.write_text(config_text(
        ("  files: []  ", f"  files: [{capital_kb_file}]  "),
        ("  admin_key_sha256: []", f"  admin_key_sha256: [{digest}]"),
    ), encoding="utf-8")
    data_dir = loaded(workdir / "data", capital_kb_file)
    with running_server(workdir, data_dir, config_path) as base:
        assert requests.get(f"{base}/admin/config", headers={"X-API-Key": key}, timeout=10).status_code == 200
        yield base, key


def _error_shape_check(ctx, response, case) -> None:
    """Every answer within 5 s; every error the API's JSON error: its status, a code, a message, and the field
    at fault where one is."""
    assert response.elapsed <= 5, f"answered in {response.elapsed:.1f} s"  # schemathesis: seconds, a float
    content_type = next((str(v[0] if isinstance(v, list) else v) for k, v in response.headers.items()
                         if k.lower() == "content-type"), "")
    if response.status_code >= 400 and not content_type.startswith("text/html"):
        body = response.json()
        assert isinstance(body, dict) and "error" in body, f"not the JSON error shape: {response.text[:200]}"
        error = body["error"]
        assert error["status"] == response.status_code and error["message"] and error["code"], error
        if response.status_code in (400, 413, 422):
            assert error.get("field"), f"{response.status_code} without the field at fault: {error}"


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


def _call(case, base: str, headers: dict) -> None:
    """Sends the case and checks the answer. A keyed GET or POST that succeeded (not the OPTIONS that Flask
    answers for every route) is sent again with a wrong key, which must be refused: 401, or 429 once the
    lockout (on, as deployed) counts the wrong keys; schemathesis's own ignored_auth check accepts only 401
    and 403, so this one replaces it there."""
    keyed = bool(headers)
    excluded = [negative_data_rejection, *([ignored_auth] if keyed else [])]
    if case.operation.path == "/console/compare":  # a string schema cannot say "a valid config": a bad one is a 400
        excluded.append(positive_data_acceptance)
    response = case.call_and_validate(base_url=base, session=requests.Session(), headers=headers,
                                      additional_checks=[_error_shape_check], excluded_checks=excluded)
    if keyed and response.status_code < 300 and case.method.upper() in ("GET", "POST"):
        request = case.as_transport_kwargs(base_url=base)
        request["headers"] = {k: v for k, v in (request.get("headers") or {}).items()
                              if k.lower() not in ("x-api-key", "authorization")} | {"X-API-Key": "wrong-key"}
        again = requests.request(**request, timeout=30)
        assert again.status_code in (401, 403, 429), f"a wrong key got {again.status_code}"


def _fuzz(base: str, headers: dict, path_regex: str = "") -> list[str]:
    """Every operation of the served document whose path matches, fuzzed in turn (schemathesis's pytest
    loader cannot take a document that only a running server serves); the operations run."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not re.match(path_regex, operation.path):
            continue

        @SETTINGS
        @given(case=operation.as_strategy())
        def check(case):
            _call(case, base, headers)

        try:
            check()
        except AssertionError as err:
            raise AssertionError(f"{operation.method.upper()} {operation.path}: {err}") from err
        ran.append(f"{operation.method.upper()} {operation.path}")
    return ran


def test_the_api_holds_its_schema_under_generated_requests(fuzzed_server):
    """Every operation, without a key (admin and console ones must refuse cleanly)."""
    ran = _fuzz(fuzzed_server[0], {})
    assert "POST /v1/search" in ran and "GET /v1/admin/versions" in ran and len(ran) >= 17


def test_admin_operations_hold_their_schema_with_the_key(fuzzed_server):
    base, key = fuzzed_server
    assert len(_fuzz(base, {"X-API-Key": key}, "^/(v1/admin|v1/records|console)")) >= 11
