"""The errors of autocanary, sorted by what the caller should do about them.

    AutocanaryError
    ├── TransientError      the world is briefly unavailable (Prometheus down, Kubernetes 5xx or
    │   │                   timeout, Redis blip): retry later with backoff; never promote meanwhile
    │   └── FencedOut       another worker (or an abort) took the rollout over: drop this result,
    │                       write nothing more
    ├── PermanentError      retrying cannot help (service deleted, request rejected by admission,
    │   │                   malformed query): end the rollout `failed` or `rolled_back` with the message
    │   ├── ForeignChange   someone else changed what autocanary steers (found on a read in the
    │   │                   write path): end `superseded`, write nothing
    │   ├── UnknownTargetKind  a rollout's target kind has no backends in this installation
    │   └── TargetNotFound  registration names an object that does not exist: 404, naming the field
    ├── InvalidTransition   the command is not allowed in the rollout's phase (abort of a finished
    │                       rollout, promote before the canary is Ready): report the phase, change nothing
    ├── ActiveRolloutExists the service already has an active rollout: 409, naming it
    ├── IdempotencyMismatch an idempotency key was used before with another request body: 422
    └── ValidationError     bad input from a user: names every field and why, changes nothing

Adapters turn library exceptions into these with `raise ... from exc`, adding what they were doing.

Outside the tree, each kept inside the layer that raises it:

    policies.InvalidPolicy            a policy document with problems by field path; the API turns
                                      it into ValidationError (`ValidationError.from_invalid_policy`)
    analyzer.replay.TraceError        a replay trace file that cannot be read: the CLI says why
    adapters.kubernetes.api.Conflict  a 409 on a conditional write: the router re-reads and retries,
                                      then raises TransientError
    api.errors.ApiError               an HTTP answer with its status, code and field
    api.auth.AuthError                a missing, unknown or too weak token: 401 or 403
    api.site_policies.SitePolicyError a bad site policy file: the API refuses to start, naming it
    cli.client.ClientError            the API's error answer, for the CLI to print and exit 2
"""

from __future__ import annotations

from collections.abc import Sequence

from policies import FieldProblem, InvalidPolicy


class AutocanaryError(Exception):
    """Base of every error autocanary raises on purpose."""


class TransientError(AutocanaryError):
    """Try again later: the dependency may come back."""


class FencedOut(TransientError):
    """This worker's lease token is no longer the newest: someone else owns the rollout now."""


class PermanentError(AutocanaryError):
    """Trying again cannot help: the rollout must end."""


class ForeignChange(PermanentError):
    """The Service is no longer as autocanary left it: someone else is in charge of its traffic."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


class UnknownTargetKind(PermanentError):
    """A rollout names a target kind this installation has no backends for."""


class TargetNotFound(PermanentError):
    """Registration names a routed object that does not exist (the field says which)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class InvalidTransition(AutocanaryError):
    """An event or command that the rollout's current phase does not allow."""

    def __init__(self, phase: str, event: str, rollout_id: str = "") -> None:
        self.phase = phase
        self.event = event
        self.rollout_id = rollout_id
        subject = f"rollout {rollout_id}" if rollout_id else "a rollout"
        super().__init__(f"cannot {event} {subject} in phase {phase}")


class ValidationError(AutocanaryError):
    """Bad input; every problem names its field."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        if not problems:
            raise ValueError("a ValidationError needs at least one problem")
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))

    @classmethod
    def single(cls, field: str, message: str) -> ValidationError:
        return cls([FieldProblem(field, message)])

    @classmethod
    def from_invalid_policy(cls, error: InvalidPolicy, prefix: str = "") -> ValidationError:
        """The policy's problems, with their paths under `prefix` (e.g. `policy_overrides`)."""
        problems = [
            FieldProblem(f"{prefix}.{p.field}" if prefix and p.field else (p.field or prefix), p.message)
            for p in error.problems
        ]
        return cls(problems)


class ActiveRolloutExists(AutocanaryError):
    """The service already has an active rollout."""

    def __init__(self, namespace: str, service: str, rollout_id: str) -> None:
        self.rollout_id = rollout_id
        super().__init__(f"{namespace}/{service} already has an active rollout: {rollout_id}")


class IdempotencyMismatch(AutocanaryError):
    """The idempotency key was used before with a different request body."""

    def __init__(self, key: str, rollout_id: str) -> None:
        self.rollout_id = rollout_id
        super().__init__(f"idempotency key {key!r} was used for another request (rollout {rollout_id})")
