"""The sandbox's Knative defaulting and admission, message for message."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.admission import default_service, denial_message, validate_service


def service(traffic: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"spec": {"containers": [{"image": "helloworld-go"}]}}}
    if traffic is not None:
        spec["traffic"] = traffic
    return {"metadata": {"name": "hello"}, "spec": spec}


def errors(traffic: list[dict[str, Any]]) -> list[str]:
    return validate_service(default_service(service(traffic)))


def test_traffic_defaults_to_100_percent_latest() -> None:
    assert default_service(service())["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]


def test_latest_revision_defaults_from_revision_name() -> None:
    defaulted = default_service(service([{"revisionName": "a-00001", "percent": 50}, {"percent": 50}]))
    assert [t["latestRevision"] for t in defaulted["spec"]["traffic"]] == [False, True]


def test_a_valid_pinned_split_passes() -> None:
    assert errors([{"revisionName": "a-00001", "percent": 90}, {"revisionName": "a-00002", "percent": 10}]) == []


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ([{"revisionName": "a-00001", "percent": 90}], "Traffic targets sum to 90, want 100: spec.traffic"),
        (
            [{"revisionName": "a-00001", "percent": 110}, {"revisionName": "a-00002", "percent": -10}],
            "expected 0 <= 110 <= 100: spec.traffic[0].percent",
        ),
        (
            [{"revisionName": "a-00001", "latestRevision": True, "percent": 100}],
            'may not set revisionName "a-00001" when latestRevision is true: spec.traffic[0].latestRevision',
        ),
        (
            [{"latestRevision": False, "percent": 100}],
            'may not set revisionName "" when latestRevision is false: spec.traffic[0].latestRevision',
        ),
        (
            [{"configurationName": "a", "percent": 100}],
            "must not set the field(s): spec.traffic[0].configurationName",
        ),
        (
            [
                {"revisionName": "a-00001", "percent": 50, "tag": "x"},
                {"revisionName": "a-00002", "percent": 50, "tag": "x"},
            ],
            'Multiple definitions for "x": spec.traffic[1].tag, spec.traffic[0].tag',
        ),
    ],
    ids=["sum", "percent-range", "both", "neither", "configurationName", "duplicate-tag"],
)
def test_knative_messages(traffic: list[dict[str, Any]], message: str) -> None:
    assert message in errors(traffic)


def test_missing_containers_are_refused() -> None:
    assert "missing field(s): spec.template.spec.containers" in validate_service(
        {"spec": {"template": {"spec": {}}, "traffic": [{"latestRevision": True, "percent": 100}]}}
    )


def test_denial_reads_like_the_webhook() -> None:
    assert denial_message(["Traffic targets sum to 90, want 100: spec.traffic"]) == (
        'admission webhook "validation.webhook.serving.knative.dev" denied the request: validation failed:'
        " Traffic targets sum to 90, want 100: spec.traffic"
    )
