"""Property-based requests from the OpenAPI schema (schemathesis), with a valid operator token:
no 5xx, and every response conforms to the schema. Bounded so the run takes seconds."""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapters.redis_store import RolloutStore
from api.app import create_app
from api.deps import Dependencies
from api.settings import ApiSettings
from tests.fakes import FakeCluster

TOKEN = {"Authorization": "Bearer op-secret"}
# What the API promises: never a 5xx, every answer as documented (status, content type, body,
# headers), and every schema-invalid request refused. policy_overrides has the whole policy as
# its schema, so policy values are generated too. Every check but positive_data_acceptance:
# semantic 4xx for schema-valid bodies (an unknown policy or service) are the point of validation.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]
EXAMPLES_PER_OPERATION = 25


def test_no_server_errors_and_responses_match_the_schema(store: RolloutStore) -> None:
    cluster = FakeCluster()
    cluster.add("shop", "checkout", {"checkout-00001": 0.0, "checkout-00002": 0.0})
    app = create_app(
        ApiSettings(tokens="oncall:operator:op-secret", sse_poll_ms=50),
        Dependencies(store, cluster.backends(), lambda task, args: None, {"redis": store.ping}),
    )
    with TestClient(app):
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 12
        for operation in operations:

            @given(operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def exercise(case: Any) -> None:
                headers = dict(TOKEN)
                if case.path.endswith("/events"):
                    headers["Accept"] = "application/json"  # the live stream is exercised in test_api.py
                case.call_and_validate(headers=headers, checks=CHECKS)

            exercise()
