"""Property-based run of the whole API against its own OpenAPI document (schemathesis): no
server error, and every answer conforms to the schema (status code, content type, body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

# schemathesis is a locked dev dependency (uv sync installs it): imported plainly, so that a
# missing install fails here instead of skipping the whole API fuzz run unnoticed.
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from tests.api.conftest import ApiStack, close_stack, make_stack

CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiStack, str]]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    stack, server = make_stack(f"sqlite:///{tmp / 'vigie.db'}", tmp)
    try:
        stack.add_user("chef", role="admin")
        for dep in ("13", "75", None):
            stack.add_alert(dep)
        yield stack, stack.token("chef")
    finally:
        close_stack(stack, server)


@pytest.fixture(scope="module")
def api_schema(fuzzed_api: tuple[ApiStack, str]) -> Any:
    stack, _ = fuzzed_api
    return schemathesis.openapi.from_url(stack.url + "/openapi.json")


# The API of operations.md. (/healthz answers 503 by design when the broker is down, as it
# is here; the Twilio webhooks are checked by the dispatch tests.)
schema = schemathesis.pytest.from_fixture("api_schema").include(path_regex=r"^/api/")


@schema.parametrize()
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any, fuzzed_api: tuple[ApiStack, str]) -> None:
    _, token = fuzzed_api
    headers = {} if case.path == "/api/token" else {"Authorization": f"Bearer {token}"}
    case.call_and_validate(headers=headers, checks=CHECKS)
