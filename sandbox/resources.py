"""The kinds of object the sandbox's API server holds, and how a real cluster names them.

One row per resource: its API group and version, plural, kind, the short names and categories
its CRD (or the built-in type) declares, and whether clients may write it (Knative Revisions
are made by the controller). The store, discovery, the routes and `kubectl get` all read this
table, so a new kind is one row here plus its admission rules. Rows are keyed by plural, except
core Services (`core-services`): Knative's Services have the plural `services` too.
"""

from __future__ import annotations

from dataclasses import dataclass

KNATIVE = "serving.knative.dev"
ISTIO = "networking.istio.io"
APPS = "apps"
GATEWAY = "gateway.networking.k8s.io"
CORE = ""
"""The core group, served under `/api/v1` rather than `/apis/{group}/{version}`."""


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    writable: bool = True
    """Clients may create, replace and patch it (not only read and delete)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`services.serving.knative.dev`, `deployments.apps`, `services`: how the API server names it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def verbs(self) -> list[str]:
        if self.writable:
            return ["create", "delete", "get", "list", "patch", "update", "watch"]
        return ["delete", "get", "list", "watch"]


RESOURCES: dict[str, Resource] = {
    "services": Resource(KNATIVE, "v1", "services", "Service", ("kservice", "ksvc"), ("all", "knative", "serving")),
    "revisions": Resource(
        KNATIVE, "v1", "revisions", "Revision", ("rev",), ("all", "knative", "serving"), writable=False
    ),
    "virtualservices": Resource(
        ISTIO, "v1", "virtualservices", "VirtualService", ("vs",), ("istio-io", "networking-istio-io")
    ),
    "destinationrules": Resource(
        ISTIO, "v1", "destinationrules", "DestinationRule", ("dr",), ("istio-io", "networking-istio-io")
    ),
    "deployments": Resource(APPS, "v1", "deployments", "Deployment", ("deploy",), ("all",)),
    "httproutes": Resource(GATEWAY, "v1", "httproutes", "HTTPRoute", (), ("gateway-api",)),
    "core-services": Resource(CORE, "v1", "services", "Service", ("svc",), ("all",)),
}
"""By the store's key for each kind (its plural, but for core Services)."""


def of_group(group: str, version: str) -> dict[str, str]:
    """The resources served under a group-version: the store's key of each, by plural."""
    return {r.plural: key for key, r in RESOURCES.items() if r.group == group and r.version == version}


GROUP_VERSIONS: tuple[tuple[str, str], ...] = tuple(
    dict.fromkeys((r.group, r.version) for r in RESOURCES.values() if r.group != CORE)
)
"""Every named API group-version the sandbox serves, Knative's first (the core group apart)."""
