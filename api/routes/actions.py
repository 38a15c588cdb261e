"""`/v1/rollouts/{id}/{abort,pause,resume,promote}` (operator): the manual commands, stored before the 202."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter

from api.deps import Deps, Operator
from api.errors import ApiError
from api.registration import found
from api.schemas import ActionAccepted, ActionRequest, ErrorBody
from rollouts import engine
from rollouts.errors import InvalidTransition
from rollouts.events import MANUAL_EVENTS
from rollouts.model import ManualActionKind

log = logging.getLogger("autocanary.api")
CONTROL_TASK = "autocanary.control"

router = APIRouter(prefix="/v1/rollouts", tags=["actions"])


def _act(kind: ManualActionKind) -> Callable[..., ActionAccepted]:
    def endpoint(rollout_id: str, principal: Operator, deps: Deps, body: ActionRequest | None = None) -> ActionAccepted:
        rollout = found(deps.store, rollout_id)
        reason = body.reason if body else ""
        try:  # the same transition table the worker uses: refuse now what it would refuse later
            engine.handle(rollout, MANUAL_EVENTS[kind](principal.name, reason), deps.clock())
        except InvalidTransition as exc:
            raise ApiError(409, "conflict", str(exc), rollout_id=rollout_id, phase=rollout.phase.value) from exc
        # Durable before the 202: the Celery message is only a wake-up, and if it is lost (or
        # the worker that takes it dies) the scheduler sends the stored command again.
        command_id = deps.store.commands.submit(rollout_id, kind, principal.name, reason, deps.clock().timestamp())
        try:
            deps.enqueue(CONTROL_TASK, [command_id])
        except Exception:  # the broker's client raises its own errors; the command is stored
            log.warning("could not send command %s now; the scheduler will", command_id, exc_info=True)
        return ActionAccepted(
            rollout_id=rollout_id, action=kind.value, actor=principal.name, phase=rollout.phase, command_id=command_id
        )

    endpoint.__doc__ = (
        f"{kind.value.capitalize()} the rollout (operator); it takes effect within a second."
        " The command is stored before the 202, so it is carried out even if the worker that"
        " takes it dies. 409 when the rollout's phase does not allow it."
    )
    return endpoint


for _kind in MANUAL_EVENTS:
    router.add_api_route(
        f"/{{rollout_id}}/{_kind.value}",
        _act(_kind),
        methods=["POST"],
        status_code=202,
        response_model=ActionAccepted,
        name=f"{_kind.value}_rollout",
        responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
    )
