"""The sandbox's Kubernetes API server: `serving.knative.dev/v1` Services and Revisions,
`networking.istio.io/v1` VirtualServices and DestinationRules, `apps/v1` Deployments (the
table in sandbox/resources.py), and core/v1 Events (create, get, list with `involvedObject`
field selectors).

It speaks the subset autocanary and the `kubernetes` client use: discovery, GET, LIST (with
`labelSelector`), WATCH (a LIST with `watch=true`, resumable from a `resourceVersion`), POST,
PUT (resourceVersion required), PATCH (JSON merge patch and JSON patch; strategic merge is 415
as for every custom resource) and DELETE, with Knative's defaulting and admission webhook on
Services, istiod's on Istio's objects. Errors are `Status` objects with the real reasons and
codes. Revisions are made by the controller; clients may read and delete them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sandbox.admission import default_service, denial_message, validate_service
from sandbox.discovery import add_discovery
from sandbox.gateway_api_admission import validate_core_service, validate_http_route
from sandbox.istio_admission import (
    istio_denial,
    validate_deployment,
    validate_destination_rule,
    validate_virtual_service,
)
from sandbox.openapi import FIELD_VALIDATION_DIRECTIVES, group_version_bytes, root_document, unknown_fields
from sandbox.patches import PatchError, json_patch, merge_patch
from sandbox.resources import CORE, GROUP_VERSIONS, RESOURCES, of_group
from sandbox.store import GROUP, KINDS, VERSION, ApiError, Change, ClusterStore
from sandbox.tables import as_table, wants_table

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
UNSUPPORTED_PATCH = (
    "the body of the request was in an unknown format - accepted media types include: "
    f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}"
)


class _Json(Response):
    """Plain json.dumps: Kubernetes objects are JSON already, FastAPI's encoder would walk them all."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def create_apiserver(store: ClusterStore) -> FastAPI:
    app = FastAPI(
        title="autocanary sandbox API server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=_Json,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.status(), status_code=error.code)

    @app.exception_handler(404)
    async def _no_route(_: Request, __: Exception) -> JSONResponse:
        return _status(404, "NotFound", "the server could not find the requested resource")

    @app.exception_handler(405)
    async def _no_method(_: Request, __: Exception) -> JSONResponse:
        return _status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    _add_core_api(app, store)
    add_discovery(app)
    for group, version in (*GROUP_VERSIONS, (CORE, "v1")):
        _add_resource_api(app, store, group, version)
    _add_openapi(app)

    @app.get("/_sandbox/traffic-history/{namespace}/{name}")
    async def traffic_history(namespace: str, name: str) -> list[dict[str, Any]]:
        """Not Kubernetes: every spec.traffic the Service was given, for tests and demos."""
        return store.traffic_history.get((namespace, name), [])

    return app


def _add_resource_api(app: FastAPI, store: ClusterStore, group: str, version: str) -> None:
    """One group-version's objects: list, get, create, replace, patch, delete, each write admitted
    as the real cluster admits it (Knative's webhook, istiod's, the API server's own checks).
    The core group's are under `/api/v1`; the store knows each kind by its key (`RESOURCES`)."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    served = of_group(group, version)

    def resource(plural: str, write: bool = False) -> str:
        if plural not in served:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if write and not RESOURCES[served[plural]].writable:
            raise _not_allowed()
        return served[plural]

    @app.get(base + "/{plural}", response_model=None)
    async def list_all(plural: str, request: Request, labelSelector: str = "") -> dict[str, Any] | Response:  # noqa: N803
        key = resource(plural)
        if _watching(request):
            return _watch(store, key, None, request)
        return _printed(_list(store, key, None, labelSelector), key, request)

    @app.get(base + "/namespaces/{namespace}/{plural}", response_model=None)
    async def list_namespaced(
        namespace: str,
        plural: str,
        request: Request,
        labelSelector: str = "",  # noqa: N803
    ) -> dict[str, Any] | Response:
        key = resource(plural)
        if _watching(request):
            return _watch(store, key, namespace, request)
        return _printed(_list(store, key, namespace, labelSelector), key, request)

    @app.post(base + "/namespaces/{namespace}/{plural}")
    async def create(namespace: str, plural: str, request: Request) -> JSONResponse:
        key = resource(plural, write=True)
        body = await _json_body(request)
        _check_identity(body, namespace, None)
        warnings = _field_warnings(key, body, request)
        created = store.create(key, namespace, admit(key, body))
        return JSONResponse(created, status_code=201, headers=warnings)

    @app.get(base + "/namespaces/{namespace}/{plural}/{name}")
    async def get(namespace: str, plural: str, name: str, request: Request) -> dict[str, Any]:
        key = resource(plural)
        return _printed_one(store.get(key, namespace, name), key, request, store.latest_version)

    @app.put(base + "/namespaces/{namespace}/{plural}/{name}")
    async def replace(namespace: str, plural: str, name: str, request: Request, response: Response) -> dict[str, Any]:
        key = resource(plural, write=True)
        body = await _json_body(request)
        _check_identity(body, namespace, name)
        if not (body.get("metadata") or {}).get("resourceVersion"):
            raise ApiError.invalid(
                key,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )
        store.get(key, namespace, name)  # 404 before admission, as the real server
        response.headers.update(_field_warnings(key, body, request))
        return store.replace(key, namespace, name, admit(key, body))

    @app.patch(base + "/namespaces/{namespace}/{plural}/{name}")
    async def patch(namespace: str, plural: str, name: str, request: Request, response: Response) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in (MERGE_PATCH, JSON_PATCH):
            raise ApiError(415, "UnsupportedMediaType", UNSUPPORTED_PATCH)
        key = resource(plural, write=True)
        current = store.get(key, namespace, name)
        body = await _json_body(request, allow_list=content_type == JSON_PATCH)
        try:
            patched = merge_patch(current, body) if content_type == MERGE_PATCH else json_patch(current, body)
        except PatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from exc
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patch must leave an object")
        _check_identity(patched, namespace, name)
        response.headers.update(_field_warnings(key, patched, request))
        # The patched object's resourceVersion is a precondition, as in Kubernetes: a patch that
        # carries metadata.resourceVersion only applies to that version.
        return store.replace(key, namespace, name, admit(key, patched))

    @app.delete(base + "/namespaces/{namespace}/{plural}/{name}")
    async def delete(namespace: str, plural: str, name: str) -> dict[str, Any]:
        key = resource(plural)
        removed = store.delete(key, namespace, name)
        if key == "services":  # owner references: the service's revisions go with it
            for revision in store.list("revisions", namespace, {"serving.knative.dev/service": name}):
                store.delete("revisions", namespace, revision["metadata"]["name"])
        return removed


def _add_core_api(app: FastAPI, store: ClusterStore) -> None:
    """The core API: version, discovery, and core/v1 Events (create, list by `involvedObject` fields)."""

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {
            "major": "1",
            "minor": "30",
            "gitVersion": "v1.30.0-autocanary-sandbox",
            # Every field the kubernetes client's VersionInfo requires, or its readiness call fails.
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    @app.get("/api")
    async def core_versions() -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}

    @app.get("/api/v1")
    async def core_resources() -> dict[str, Any]:
        event = {"name": "events", "singularName": "event", "namespaced": True, "kind": "Event"}
        service = RESOURCES["core-services"]
        return {
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {**event, "verbs": ["create", "get", "list"], "shortNames": ["ev"]},
                {
                    "name": service.plural,
                    "singularName": "service",
                    "namespaced": True,
                    "kind": service.kind,
                    "verbs": service.verbs,
                    "shortNames": list(service.short_names),
                    "categories": list(service.categories),
                },
            ],
        }

    @app.post("/api/v1/namespaces/{namespace}/events")
    async def create_event(namespace: str, request: Request) -> JSONResponse:
        body = await _json_body(request)
        _check_identity(body, namespace, None)
        return JSONResponse(store.create_event(namespace, body), status_code=201)

    @app.get("/api/v1/namespaces/{namespace}/events")
    async def list_events(namespace: str, fieldSelector: str = "") -> dict[str, Any]:  # noqa: N803 (API name)
        return _event_list(store.list_events(namespace, _selector(fieldSelector)), store.latest_version)

    @app.get("/api/v1/events")
    async def list_all_events(fieldSelector: str = "") -> dict[str, Any]:  # noqa: N803 (API name)
        return _event_list(store.list_events(None, _selector(fieldSelector)), store.latest_version)


def _add_openapi(app: FastAPI) -> None:
    """OpenAPI v3 discovery, so kubectl validates through the server (see sandbox/openapi.py)."""

    @app.get("/openapi/v3")
    async def openapi_root() -> dict[str, Any]:
        return root_document()

    @app.get(f"/openapi/v3/apis/{GROUP}/{VERSION}")
    async def openapi_group_version() -> Response:
        return Response(group_version_bytes(), media_type="application/json")


def _field_warnings(plural: str, obj: dict[str, Any], request: Request) -> dict[str, str]:
    """Apply the request's `fieldValidation`: Strict refuses unknown fields, Warn returns them as
    a `Warning` header, Ignore (and no directive, as for a CRD) accepts them. Only Knative's
    schemas are described (sandbox/openapi.py); other kinds accept every field."""
    directive = request.query_params.get("fieldValidation", "Ignore") or "Ignore"
    if directive not in FIELD_VALIDATION_DIRECTIVES:
        raise ApiError(
            400,
            "BadRequest",
            f'fieldValidation: Unsupported value: "{directive}": supported values: "Ignore", "Warn", "Strict"',
        )
    unknown = unknown_fields(obj) if directive != "Ignore" and plural in KINDS else []
    if not unknown:
        return {}
    described = ", ".join(f'unknown field "{path}"' for path in unknown)
    if directive == "Strict":
        kind = str(obj.get("kind") or "Service")
        raise ApiError(
            400,
            "BadRequest",
            f'{kind} in version "{VERSION}" cannot be handled as a {kind}: strict decoding error: {described}',
        )
    return {"Warning": ", ".join(f'299 - "unknown field \\"{path}\\""' for path in unknown)}


def _status(code: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(ApiError(code, reason, message).status(), status_code=code)


def _not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


async def _json_body(request: Request, allow_list: bool = False) -> Any:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict) and not (allow_list and isinstance(body, list)):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return body


_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_identity(body: dict[str, Any], namespace: str, name: str | None) -> None:
    if len(namespace) > 63 or not _LABEL.match(namespace):  # as the API server validates metadata.namespace
        raise ApiError(
            422,
            "Invalid",
            f'metadata.namespace: Invalid value: "{namespace}": a lowercase RFC 1123 label must consist of lower'
            " case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        )
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        raise ApiError(400, "BadRequest", "metadata: Required value")
    if metadata.get("namespace") not in (None, namespace):
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    if name is not None and metadata.get("name") not in (None, name):
        raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")


_API_SERVER_CHECKS: dict[str, Callable[[dict[str, Any]], ApiError | None]] = {
    "deployments": validate_deployment,
    "httproutes": validate_http_route,
    "core-services": validate_core_service,
}
"""The API server's own checks (a built-in type's validation, a CRD's schema): 422 `Invalid`."""


def admit(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the cluster stores it (Knative defaults Services), or the refusal."""
    if plural == "services":
        defaulted = default_service(obj)
        errors = validate_service(defaulted)
        if errors:
            raise ApiError(400, "BadRequest", denial_message(errors))
        return defaulted
    problems: list[str] = []
    if plural == "virtualservices":
        problems = validate_virtual_service(obj)
    elif plural == "destinationrules":
        problems = validate_destination_rule(obj)
    else:
        check = _API_SERVER_CHECKS.get(plural)
        refusal = check(obj) if check is not None else None
        if refusal is not None:
            raise refusal
    if problems:
        raise istio_denial(problems)
    return obj


def _selector(selector: str) -> dict[str, str]:
    """`a=b,c==d` label or field selectors (equality only, as autocanary and kubectl describe use them)."""
    terms: dict[str, str] = {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        terms[key.strip()] = value.strip().lstrip("=")
    return terms


def _event_list(items: list[dict[str, Any]], version: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "EventList", "metadata": {"resourceVersion": version}, "items": items}


def _printed(listed: dict[str, Any], plural: str, request: Request) -> dict[str, Any]:
    """A list as kubectl asks for it: a Table of the CRD's printer columns, or the objects."""
    if wants_table(request.headers.get("accept")):
        return as_table(plural, listed["items"], listed["metadata"]["resourceVersion"])
    return listed


def _printed_one(found: dict[str, Any], plural: str, request: Request, resource_version: str) -> dict[str, Any]:
    if wants_table(request.headers.get("accept")):
        return as_table(plural, [found], resource_version)
    return found


def _watching(request: Request) -> bool:
    return request.query_params.get("watch", "").lower() in ("1", "true")


def _watch(store: ClusterStore, plural: str, namespace: str | None, request: Request) -> Response:
    """A watch, as the API server streams it: one WatchEvent per line, from `resourceVersion` on.

    Without a resourceVersion (or with "0") every existing object comes first as ADDED; with one
    the changes after it are replayed, or, if they are no longer kept, one ERROR event with 410
    Gone (the client lists again). With `allowWatchBookmarks`, a stream that times out ends with a
    BOOKMARK of the newest version. Label selectors are not supported on watches here.
    """
    params = request.query_params
    try:
        timeout = min(float(params.get("timeoutSeconds") or 1800), 1800.0)
        since = int(params.get("resourceVersion") or 0)
        bookmarks = params.get("allowWatchBookmarks", "").lower() in ("1", "true")
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"invalid watch parameter: {exc}") from exc
    queue: asyncio.Queue[Change] = asyncio.Queue()
    kind, api_version = RESOURCES[plural].kind, RESOURCES[plural].api_version

    def wanted(change: Change) -> bool:
        return change[1] == plural and (namespace is None or change[2] == namespace)

    def follower(change: Change) -> None:
        if wanted(change):
            queue.put_nowait(change)

    # Both read at once, with no await between them: nothing is missed or sent twice.
    store.follow(follower)
    backlog: list[bytes] | None
    if since == 0:
        backlog = [
            json.dumps({"type": "ADDED", "object": obj}, separators=(",", ":")).encode() + b"\n"
            for obj in store.list(plural, namespace)
        ]
    else:
        kept = store.changes_since(since)
        backlog = None if kept is None else [change[3] for change in kept if wanted(change)]

    async def events() -> AsyncIterator[bytes]:
        try:
            if backlog is None:
                gone = ApiError(410, "Expired", f"too old resource version: {since}").status()
                yield json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n"
                return
            for line in backlog:
                yield line
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    change = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                yield change[3]
            if bookmarks:
                # As the API server does before it ends a watch: the newest version, so a watch
                # of a quiet kind resumes from here and not from a version no longer kept. The
                # changes still queued go first; there is no await between them and the version.
                pending = [queue.get_nowait()[3] for _ in range(queue.qsize())]
                mark = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": store.latest_version}}
                for line in pending:
                    yield line
                yield json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n"
        finally:
            store.unfollow(follower)

    return StreamingResponse(events(), media_type="application/json")


def _list(store: ClusterStore, plural: str, namespace: str | None, selector: str) -> dict[str, Any]:
    labels = _selector(selector)
    return {
        "apiVersion": RESOURCES[plural].api_version,
        "kind": RESOURCES[plural].kind + "List",
        "metadata": {"resourceVersion": store.latest_version},
        "items": store.list(plural, namespace, labels),
    }
