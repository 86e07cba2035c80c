"""schemathesis against the served OpenAPI description (``GET /v2/openapi.json``).

For every documented operation, schemathesis generates requests from the schema, sends
them to a real server (the hardened server of the attack suite, with an admin token so
that every scope is reached), and checks: no 5xx, a documented status, a documented content
type, and a body that conforms to the response schema. Negative cases (requests that break
the schema) are sent too; they must be refused with a documented 4xx, never a 5xx.
A bounded number of examples per operation keeps the file well under 90 s.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.conftest import Fort, assert_healthy

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
POSITIVE = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
NEGATIVE = settings(POSITIVE, max_examples=12)


def _schema(fort: Fort) -> Any:
    return schemathesis.openapi.from_url(
        f"{fort.http}/v2/openapi.json", headers=fort.bearer(fort.admin)
    )


def test_the_description_is_served_and_valid(fort: Fort) -> None:
    with httpx.Client(timeout=10) as c:
        r = c.get(f"{fort.http}/v2/openapi.json", headers=fort.bearer(fort.read))
        assert c.get(f"{fort.http}/v2/openapi.json").status_code == 401
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert {"/v2/models/{name}/infer", "/v1/models/{name}:predict", "/v2/health/ready"} <= set(
        doc["paths"]
    )
    operations = [op.ok() for op in _schema(fort).get_all_operations()]
    assert len(operations) >= 20


def _operations(fort: Fort) -> list[Any]:
    return [result.ok() for result in _schema(fort).get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_and_never_5xx(fort: Fort, mode: GenerationMode) -> None:
    headers = fort.bearer(fort.admin)
    checks = CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error]
    budget = POSITIVE if mode is GenerationMode.POSITIVE else NEGATIVE
    sent = 0
    for operation in _operations(fort):

        @budget
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            nonlocal sent
            response = case.call(base_url=fort.http, headers=headers, timeout=10)
            case.validate_response(response, checks=checks)
            sent += 1

        try:
            run()
        except Unsatisfiable:  # nothing in this operation can be negated (no params, no body)
            assert mode is GenerationMode.NEGATIVE
    assert sent >= 40
    assert_healthy(fort)
