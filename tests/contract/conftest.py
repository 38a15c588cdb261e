"""Fixtures the contract tests against the sandbox's API server share."""

from __future__ import annotations

import pytest
from kubernetes import client

from adapters.kubernetes.api import KubernetesApi
from sandbox.cluster import Endpoints
from tests.knative import custom_objects


@pytest.fixture
def api(sandbox: Endpoints) -> client.CustomObjectsApi:
    """The kubernetes client's custom objects API, as a user's kubectl would act on the sandbox."""
    return custom_objects(sandbox)


@pytest.fixture
def kube(sandbox: Endpoints) -> KubernetesApi:
    """autocanary's own Kubernetes adapter, on the sandbox."""
    return KubernetesApi.from_kubeconfig(sandbox.kubeconfig)
