"""The Knative canary guide, by hand, on the sandbox: what autocanary will automate."""

from __future__ import annotations

import asyncio

import pytest

from rollouts import SetTraffic
from sandbox.cluster import Endpoints
from sandbox.loadgen import drive
from tests.knative import (
    create,
    custom_objects,
    hello_service,
    knative_backends,
    new_revision,
    pinned_pair,
    service_ready,
)

V1, V2 = "helloworld-go-00001", "helloworld-go-00002"


@pytest.mark.slow
def test_seed_scenario_by_hand(sandbox: Endpoints, namespace: str) -> None:
    api = custom_objects(sandbox)
    backends = knative_backends(sandbox)
    pair = pinned_pair(namespace, "helloworld-go", V1, V2)
    host = f"helloworld-go.{namespace}.example.com"

    create(api, namespace, hello_service("helloworld-go", "World"))
    service_ready(api, namespace, "helloworld-go", V1)
    new_revision(api, namespace, "helloworld-go", "Knative", pin=V1)
    state = backends.target.get(namespace, "helloworld-go")
    service_ready(api, namespace, "helloworld-go", V2)
    assert backends.target.get(namespace, "helloworld-go").split == {V1: 100, V2: 0}

    state = backends.router.set_weight(pair, SetTraffic(stable=50, canary=50))
    assert state.is_live(SetTraffic(stable=50, canary=50), V1, V2)
    half = asyncio.run(drive(sandbox.gateway, host, rate=200, duration=1.0))
    assert half.completed == 200
    world, knative = half.by_body["Hello World!"], half.by_body["Hello Knative!"]
    assert world + knative == 200
    # Binomial(200, 0.5): mean 100, sd 7.07; 4.5 sd either side fails once in ~150,000 runs.
    assert 68 <= world <= 132, half.by_body

    backends.router.set_weight(pair, SetTraffic(stable=0, canary=100))
    full = asyncio.run(drive(sandbox.gateway, host, rate=200, duration=0.5))
    assert full.by_body == {"Hello Knative!": 100}
