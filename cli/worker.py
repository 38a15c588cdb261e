"""`autocanary worker` and `autocanary scheduler`: the long-running processes of the workers."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import uuid
from datetime import timedelta
from typing import Annotated

import typer

worker_app = typer.Typer(help="Run a Celery worker that ticks rollouts and carries out commands.")
scheduler_app = typer.Typer(help="Run the scheduler that sends due rollouts to the workers.")


def _scheduler_loop(stop: threading.Event) -> None:
    from adapters.redis_store import RolloutStore
    from workers.celery_app import CONTROL_TASK, TICK_TASK, app, redis_location, settings
    from workers.scheduler import Scheduler, queued_messages

    def send(ids: list[str], due: dict[str, float]) -> None:
        app.send_task(TICK_TASK, args=[ids, due], queue="ticks")

    def resend(command_id: str) -> None:
        app.send_task(CONTROL_TASK, args=[command_id], queue="control")

    Scheduler(
        RolloutStore.at(redis_location, settings.redis_prefix),
        send,
        resend=resend,
        owner=f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        batch_size=settings.batch_size,
        claim=timedelta(seconds=settings.claim_seconds),
        poll_seconds=settings.scheduler_poll_seconds,
        retention=timedelta(days=settings.retention_days) if settings.retention_days > 0 else None,
        backlog=lambda: queued_messages(app, "ticks"),
        max_queued_batches=settings.scheduler_max_queued_batches,
    ).run_forever(stop)


HealthPort = Annotated[
    int | None,
    typer.Option(
        "--health-port",
        envvar="AUTOCANARY_HEALTH_PORT",
        help="Serve /healthz and /readyz (Redis reachable) on this port, for Kubernetes probes.",
    ),
]


def _serve_health(port: int | None) -> None:
    if port is None:
        return
    from adapters.redis_store import RolloutStore
    from workers.celery_app import redis_location, settings
    from workers.health import HealthServer

    store = RolloutStore.at(redis_location, settings.redis_prefix)
    HealthServer({"redis": store.ping}, port=port).start()


def _relay_loop(stop: threading.Event) -> None:
    from workers.celery_app import relay

    while not stop.is_set():
        try:
            relay().run_forever(stop)
        except Exception:  # a relay that cannot start (no kubeconfig yet, ...) must not die silently
            logging.getLogger("autocanary.notify").exception("outbox relay stopped; restarting in 5 s")
            stop.wait(5)


def _consume(queues: str, loglevel: str, name: str, pool: list[str]) -> None:
    from workers import celery_app
    from workers.celery_app import app, warm_up

    if "ticks" not in queues.split(","):
        celery_app.watching_targets = False
    if "solo" in pool:  # tasks run in this very process: build its runner before the first one arrives
        warm_up()
    arguments = ["worker", "--queues", queues, "--loglevel", loglevel, "--hostname", f"{name}@%h"]
    app.worker_main([*arguments, "--without-gossip", "--without-mingle", "--without-heartbeat", *pool])


@worker_app.callback(invoke_without_command=True)
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Ticks run at once (prefork).")] = 1,
    with_scheduler: Annotated[bool, typer.Option(help="Also run a scheduler in this process.")] = False,
    control_consumer: Annotated[
        bool, typer.Option(help="Fork a consumer dedicated to the control queue, so commands never wait behind a tick.")
    ] = True,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "WARNING",
    health_port: HealthPort = None,
) -> None:
    """Consume `control` first, then `ticks`. Settings come from AUTOCANARY_* variables.

    A tick batch can take a second or more; a worker runs one task at a time, so by default it
    forks a small consumer of the `control` queue alone, and an abort starts within milliseconds
    whatever tick is in flight. (The tick consumer also takes control tasks when it is free.)
    """
    if with_scheduler:
        stop = threading.Event()
        threading.Thread(target=_scheduler_loop, args=(stop,), name="scheduler", daemon=True).start()
    solo = ["--pool", "solo"]
    fork = multiprocessing.get_context("fork")
    if control_consumer:
        name = f"control-{os.getpid()}"
        fork.Process(target=_consume, args=("control", loglevel, name, solo), name=name, daemon=True).start()
    # Notifications and Kubernetes Events, delivered from the outbox in a process of their own:
    # a burst of them (1,000 rollouts starting at once) must not take the ticks' interpreter.
    fork.Process(target=_relay_loop, args=(threading.Event(),), name="outbox-relay", daemon=True).start()
    _serve_health(health_port)  # after the forks: the children must not inherit the listening socket
    pool = solo if concurrency == 1 else ["--pool", "prefork", "--concurrency", str(concurrency)]
    _consume("control,ticks", loglevel, f"ticks-{os.getpid()}", pool)


@scheduler_app.callback(invoke_without_command=True)
def scheduler(health_port: HealthPort = None) -> None:
    """Send due rollouts to the workers until SIGINT or SIGTERM. Several may run; one leads."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _serve_health(health_port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    _scheduler_loop(stop)
