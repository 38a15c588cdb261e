"""Notifications: webhook body and signature, Slack format, retries, and never blocking a rollout."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime

import httpx
import respx

from adapters.notifiers.webhook import SIGNATURE_HEADER
from policies import EgressRules, NotificationEvent, NotificationKind, NotificationTarget
from rollouts import Notify, Phase
from rollouts.errors import PermanentError
from tests.factories import T0, policy, rollout
from workers.notify import KUBERNETES_REASONS, NotificationDispatcher

HOOK = "https://hooks.example.com/autocanary"
SLACK = "https://hooks.slack.com/services/T0/B0/xyz"
ROLLED_BACK = Notify(NotificationEvent.ROLLED_BACK, "checkout-00001 serves 100 % again: errors: canary 5xx 2.1 %")


def notifier(*targets: NotificationTarget, **options: object) -> NotificationDispatcher:
    secrets = {"AUTOCANARY_NOTIFY_SECRET_HOOK": "s3cret"}
    return NotificationDispatcher(targets, secrets=secrets, sleep=lambda _: None, clock=lambda: T0, **options)  # type: ignore[arg-type]


@respx.mock
def test_webhook_body_and_signature() -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(204))
    target = NotificationTarget(kind=NotificationKind.WEBHOOK, url=HOOK, secret_env="AUTOCANARY_NOTIFY_SECRET_HOOK")  # noqa: S106 (a name)
    done = notifier(target).send(
        rollout(labels={"commit": "abc"}).with_phase(Phase.ROLLED_BACK, T0, "bad"), ROLLED_BACK
    )
    assert [future.result(5) for future in done] == [True]
    request = route.calls.last.request
    body = json.loads(request.content)
    assert body["event"] == "rolled_back" and body["message"] == ROLLED_BACK.message
    assert body["rollout"]["service"] == "checkout" and body["rollout"]["labels"] == {"commit": "abc"}
    assert body["rollout"]["phase"] == "rolled_back" and body["at"] == T0.isoformat()
    expected = "sha256=" + hmac.new(b"s3cret", request.content, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == expected
    assert request.headers["X-Autocanary-Event"] == "rolled_back"


@respx.mock
def test_slack_gets_a_readable_line() -> None:
    route = respx.post(SLACK).mock(return_value=httpx.Response(200, text="ok"))
    [future] = notifier(NotificationTarget(kind=NotificationKind.SLACK, url=SLACK)).send(rollout(), ROLLED_BACK)
    assert future.result(5)
    text = json.loads(route.calls.last.request.content)["text"]
    assert text.startswith(":rotating_light: *rolled back* shop/checkout (checkout-00002): checkout-00001 serves")


@respx.mock
def test_failures_are_retried_with_backoff_then_delivered() -> None:
    route = respx.post(HOOK).mock(side_effect=[httpx.Response(503), httpx.ConnectError("refused"), httpx.Response(200)])
    waits: list[float] = []
    hook = NotificationDispatcher(
        [NotificationTarget(kind=NotificationKind.WEBHOOK, url=HOOK)], sleep=waits.append, backoff=0.5
    )
    [future] = hook.send(rollout(), ROLLED_BACK)
    assert future.result(5) is True
    assert route.call_count == 3
    assert waits == [0.5, 1.0]


@respx.mock
def test_a_client_error_is_not_retried() -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(404))
    [future] = notifier(NotificationTarget(kind=NotificationKind.WEBHOOK, url=HOOK)).send(rollout(), ROLLED_BACK)
    assert future.result(5) is False
    assert route.call_count == 1


@respx.mock
def test_policy_targets_filter_by_event_and_add_to_the_defaults() -> None:
    hook = respx.post(HOOK).mock(return_value=httpx.Response(200))
    slack = respx.post(SLACK).mock(return_value=httpx.Response(200))
    only_promotions = policy(notifications=[{"kind": "slack", "url": SLACK, "events": ["promoted"]}])
    sender = notifier(NotificationTarget(kind=NotificationKind.WEBHOOK, url=HOOK))
    for future in sender.send(rollout(only_promotions), ROLLED_BACK):
        future.result(5)
    assert (hook.call_count, slack.call_count) == (1, 0)
    for future in sender.send(rollout(only_promotions), Notify(NotificationEvent.PROMOTED, "done")):
        future.result(5)
    assert (hook.call_count, slack.call_count) == (2, 1)


@respx.mock
def test_a_dead_webhook_gives_up_without_raising() -> None:
    respx.post(HOOK).mock(side_effect=httpx.ConnectTimeout("timed out"))
    [future] = notifier(NotificationTarget(kind=NotificationKind.WEBHOOK, url=HOOK), retries=2).send(
        rollout(), ROLLED_BACK
    )
    assert future.result(5) is False


class RecordedEvents:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.recorded: list[tuple[str, str, str, str, bool]] = []

    def record_event(
        self,
        namespace: str,
        service: str,
        *,
        reason: str,
        message: str,
        warning: bool,
        count: int = 1,
        first_at: datetime | None = None,
        last_at: datetime | None = None,
    ) -> None:
        if self.fail:
            raise PermanentError("403 events is forbidden: cannot create resource")
        self.recorded.append((namespace, service, reason, message, warning))


def test_every_transition_becomes_a_kubernetes_event_on_the_service() -> None:
    events = RecordedEvents()
    sender = notifier(events=lambda kind: events)
    subject = rollout()
    routine = sender.send(subject, Notify(NotificationEvent.STEP_ADVANCED, "canary at 10 %"))
    assert routine == []  # sent by the event budget (at once here: it has tokens), not the pool
    [final] = sender.send(subject.with_phase(Phase.ROLLED_BACK, T0, "bad"), ROLLED_BACK)
    assert final.result(5) is True
    recorded = sorted(events.recorded, key=lambda e: e[2])
    assert [(ns, svc, reason, warning) for ns, svc, reason, _, warning in recorded] == [
        (subject.namespace, "checkout", "CanaryRolledBack", True),
        (subject.namespace, "checkout", "CanaryStepAdvanced", False),
    ]
    assert subject.id in recorded[0][3] and ROLLED_BACK.message in recorded[0][3]


def test_every_notification_event_has_a_kubernetes_reason() -> None:
    assert set(KUBERNETES_REASONS) == set(NotificationEvent)
    assert all(reason[0].isupper() and reason.isalnum() for reason in KUBERNETES_REASONS.values())


def test_a_refused_kubernetes_event_is_logged_not_raised() -> None:
    [future] = notifier(events=lambda kind: RecordedEvents(fail=True)).send(rollout(), ROLLED_BACK)
    assert future.result(5) is False


@respx.mock
def test_an_allowed_host_that_now_resolves_to_a_private_address_is_not_called() -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(204))
    target = NotificationTarget(kind=NotificationKind.WEBHOOK, url=HOOK)
    rules = EgressRules.parse("*.example.com")
    own = rollout(policy(notifications=[target.model_dump(mode="json")]))  # a rollout's own target
    rebound = notifier(egress=rules, resolve=lambda host: ["127.0.0.1"])
    assert [f.result(5) for f in rebound.send(own, ROLLED_BACK)] == [False]
    assert not route.called
    public = notifier(egress=rules, resolve=lambda host: ["93.184.215.14"])
    assert [f.result(5) for f in public.send(own, ROLLED_BACK)] == [True]
    assert route.called
