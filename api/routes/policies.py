"""`/v1/policies` (viewer): the built-in policies and the installation's own, resolved."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Deps, Viewer
from api.errors import ApiError
from api.schemas import ErrorBody
from policies import Policy, load_policy, policy_names

router = APIRouter(prefix="/v1/policies", tags=["policies"])


@router.get("")
def policies(principal: Viewer, deps: Deps) -> dict[str, Policy]:
    """Every policy, built-in and the installation's own, resolved (viewer)."""
    site = deps.site_policies
    return {name: load_policy(name, site=site) for name in policy_names(site)}


@router.get("/{name}", responses={404: {"model": ErrorBody}})
def policy(name: str, principal: Viewer, deps: Deps) -> Policy:
    """One policy, resolved (viewer)."""
    site = deps.site_policies
    if name not in policy_names(site):
        known = ", ".join(policy_names(site))
        raise ApiError(404, "not_found", f"no policy {name!r}; policies are: {known}", "name")
    return load_policy(name, site=site)
