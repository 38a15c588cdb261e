"""The Celery application: two queues, late acknowledgement, no result backend.

- `control` carries abort/pause/resume/promote, as the id of a command already stored in Redis
  (`adapters.redis_store.commands`); workers consume it before `ticks` (`-Q control,ticks` on the Redis
  transport polls the queues in that order), so a command never waits behind ticks;
- `ticks` carries batches of due rollout ids from the scheduler.

Tasks are acknowledged after they run (`acks_late`) and given back if the worker dies
(`task_reject_on_worker_lost`); the visibility timeout is longer than any task. Redelivery is a
second line of defence only: the scheduler sends a rollout again when its claim expires, and a
command again when the worker on it stops beating; leases, fencing tokens and compare-and-set
make a repeated tick or command harmless.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta
from functools import cache

from celery import Celery, signals
from kombu.entity import Queue

from adapters.dns import resolve
from adapters.factory import kubernetes_backends
from adapters.kubernetes.api import KubernetesApi
from adapters.prometheus import PrometheusMetrics
from adapters.redis_store import RolloutStore
from policies import SECRET_ENV_PREFIX, EgressRules, NotificationKind, NotificationTarget
from rollouts.errors import FencedOut, TransientError
from rollouts.ports import Backends
from workers.heartbeat import start_heartbeat
from workers.notify import NotificationDispatcher, OutboxRelay
from workers.runner import Runner
from workers.settings import WorkerSettings

TICK_TASK = "autocanary.tick"
CONTROL_TASK = "autocanary.control"
GLOBAL_SECRET = "AUTOCANARY_NOTIFY_WEBHOOK_SECRET"  # noqa: S105 (a variable name)
log = logging.getLogger("autocanary.worker")

settings = WorkerSettings()
try:
    redis_location = settings.redis()
except ValueError as exc:
    raise SystemExit(f"autocanary worker: {exc}") from exc  # one clear line in the pod's log
broker_url, broker_options = redis_location.celery_broker()
app = Celery("autocanary", broker=broker_url)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    result_backend=None,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 300, **broker_options},
    broker_connection_retry_on_startup=True,
    task_queues=(Queue("control"), Queue("ticks")),
    task_default_queue="ticks",
    task_routes={TICK_TASK: {"queue": "ticks"}, CONTROL_TASK: {"queue": "control"}},
    worker_hijack_root_logger=False,
    task_time_limit=120,
)


SLOW_TICK_SECONDS = 5.0
"""A tick batch that took longer is logged with the time of each stage."""


def _backends(*, watch: bool = False) -> Backends:
    """The targets, routers and event recorders of every target kind, on one Kubernetes client
    (with `watch`, following the routed objects: for a runner, never before a fork)."""
    api = KubernetesApi.from_kubeconfig(settings.kubeconfig, settings.kube_context)
    return kubernetes_backends(
        api,
        settle_timeout=settings.settle_timeout_seconds,
        read_concurrency=settings.write_concurrency,
        watch=watch,
    )


def _owner() -> str:
    return f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


watching_targets = True
"""Whether this process's runner follows the routed objects (the control-only consumer does not:
it writes one rollout at a time, fresh from the API server, and ticks nothing)."""


@cache
def runner() -> Runner:
    """One runner per worker process, built from the environment on first use, with its heartbeat."""
    built = Runner(
        RolloutStore.at(redis_location, settings.redis_prefix),
        _backends(watch=settings.watch_targets and watching_targets),
        PrometheusMetrics(settings.prometheus()),
        owner=_owner(),
        lease_ms=int(settings.lease_seconds * 1000),
        metrics_lag=settings.metrics_lag,
        min_window=timedelta(seconds=settings.metrics_min_window_seconds),
        write_concurrency=settings.write_concurrency,
    )
    start_heartbeat(built.store.commands, built.owner)
    return built


def warm_up() -> None:
    """Build this process's runner now, so the first command it takes (an abort, often) does not
    pay for connecting and importing. A runner that cannot be built yet (no kubeconfig) is built
    at first use instead, as before."""
    try:
        runner()
    except Exception:  # logged; the first task tries again and reports its own error
        log.warning("runner not built at start; building it at the first task", exc_info=True)


@signals.worker_process_init.connect
def _warm_up_pool_process(**_: object) -> None:
    """Each prefork child builds its own runner (a runner built before the fork would carry a
    heartbeat thread that did not survive it)."""
    warm_up()


def relay() -> OutboxRelay:
    """The notification relay of a worker process: global targets, policies' targets, Kubernetes Events."""
    defaults = []
    secrets = {name: value for name, value in os.environ.items() if name.startswith(SECRET_ENV_PREFIX)}
    if settings.notify_webhook_url:
        # The global secret under a name no policy may write (policies must use the prefix),
        # so only this target signs with it.
        secret_env = None
        if settings.notify_webhook_secret:
            secret_env, secrets[GLOBAL_SECRET] = GLOBAL_SECRET, settings.notify_webhook_secret
        defaults.append(
            NotificationTarget.model_construct(
                kind=NotificationKind.WEBHOOK, url=settings.notify_webhook_url, secret_env=secret_env, events=None
            )
        )
    if settings.notify_slack_url:
        defaults.append(NotificationTarget(kind=NotificationKind.SLACK, url=settings.notify_slack_url))
    notifier = NotificationDispatcher(
        defaults,
        secrets=secrets,
        events=_backends().events_of if settings.kubernetes_events else None,
        events_per_second=settings.events_per_second,
        events_burst=max(1, int(settings.events_per_second * 5)),
        egress=EgressRules.parse(settings.notify_allowed_hosts),
        resolve=resolve,
    )
    store = RolloutStore.at(redis_location, settings.redis_prefix)
    return OutboxRelay(store, notifier, _owner(), reclaim_idle_ms=int(settings.notify_reclaim_seconds * 1000))


@app.task(
    name=TICK_TASK,
    autoretry_for=(TransientError,),
    max_retries=5,
    retry_backoff=1,  # 1, 2, 4 ... seconds
    retry_backoff_max=30,
    retry_jitter=False,
)
def tick(ids: list[str], due: dict[str, float] | None = None) -> None:
    report = runner().tick(ids, due)
    if report.took > SLOW_TICK_SECONDS:  # what held a batch up, for whoever reads the log at 3 a.m.
        log.warning(
            "slow tick of %d rollouts (%d leased), %.1fs: %s", len(ids), report.leased, report.took, report.stages()
        )
    log.debug("tick: %s", report)


@app.task(
    name=CONTROL_TASK,
    autoretry_for=(TransientError,),
    max_retries=5,
    retry_backoff=0.2,  # 0.2, 0.4, 0.8 ... seconds: an abort is retried fast
    retry_backoff_max=5,
    retry_jitter=False,
)
def control(command_id: str) -> None:
    """A wake-up for a command the API stored: whoever runs it (again) carries it out once."""
    try:
        runner().execute(command_id)
    except FencedOut as exc:  # a newer command took the rollout over; it carries on
        log.info("command %s: %s", command_id, exc)
