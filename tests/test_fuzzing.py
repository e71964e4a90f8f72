"""API fuzzing: schemathesis generates requests from docs/openapi.yaml, valid and invalid, for every operation
(admin ones with and without the API key) and sends them to a real `kb serve` over HTTP.

Every response must conform to the schema (status documented, body shape), none may be a 5xx, a request
the schema allows must not be refused, and every 4xx must be the JSON error shape naming what was wrong.
The API is lenient by design (unknown parameters are ignored, null means the default), so schemathesis's
check that invalid requests are refused is left out. The example count is bounded for the quick suite
(KB_FUZZ_EXAMPLES raises it for a longer run)."""

from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection

from kb_service.http.auth import new_key
from tests.conftest import REPO, config_text, loaded, running_server

EXAMPLES = int(os.environ.get("KB_FUZZ_EXAMPLES", "25"))
schema = schemathesis.openapi.from_path(REPO / "docs" / "openapi.yaml")


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory, capital_kb_file):
    """A real server over the capital KB whose admin key the tests know; reloads read the same KB file."""
    workdir = tmp_path_factory.mktemp("fuzz")
    key, digest = new_key()
    config_path = workdir / "config.yaml"
    config_path.write_text(config_text(
        ("  files: []  ", f"  files: [{capital_kb_file}]  "),
        ("  admin_key_sha256: []", f"  admin_key_sha256: [{digest}]"),
        ("  failures_allowed: 5 ", "  failures_allowed: 1000000 "),
    ), encoding="utf-8")
    data_dir = loaded(workdir / "data", capital_kb_file)
    with running_server(workdir, data_dir, config_path) as base:
        yield base, key


def _error_shape_check(ctx, response, case) -> None:
    """Every 4xx is the API's JSON error: its status, a message, and the field at fault where one is."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and "error" in body, f"4xx without the JSON error shape: {response.text[:200]}"
        error = body["error"]
        assert error["status"] == response.status_code and error["message"], error
        if response.status_code in (400, 413, 422):
            assert error.get("field"), f"{response.status_code} without the field at fault: {error}"


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


def _call(case, base: str, headers: dict) -> None:
    case.call_and_validate(base_url=base, session=requests.Session(), headers=headers,
                           additional_checks=[_error_shape_check], excluded_checks=[negative_data_rejection])


@schema.parametrize()
@SETTINGS
def test_the_api_holds_its_schema_under_generated_requests(case, fuzzed_server):
    """Every operation, without a key (admin ones must refuse cleanly)."""
    _call(case, fuzzed_server[0], {})


@schema.include(path_regex="^/(admin|console/judgments)").parametrize()
@SETTINGS
def test_admin_operations_hold_their_schema_with_the_key(case, fuzzed_server):
    base, key = fuzzed_server
    _call(case, base, {"X-API-Key": key})
