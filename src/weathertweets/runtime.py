"""Run one service, several, or all of them in one process, and stop them in the right order.

The services are data (`SERVICES`): what each needs and how it starts. Start follows the table
(consumers, ingest, gateway); a stop (SIGINT/SIGTERM) goes in reverse, so in-flight requests
finish, ingest flushes to the broker, and the consumers drain what is left. Background tasks
run under a `Supervisor`: one that dies makes `/readyz` fail and stops the process, which then
exits non-zero (`ServiceFailed`) for its orchestrator to restart.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from weathertweets import collector, energy, tracing
from weathertweets.access import Access, RateLimiter, load_keys
from weathertweets.backends import open_broker, open_counters, open_idempotency, open_store
from weathertweets.backends.sqlite_retention import Retention
from weathertweets.config import SettingError, Settings
from weathertweets.metrics import TASK_FAILURES, watch_data_dir
from weathertweets.ports import BackendUnavailable, Broker, Counters, Idempotency, Store
from weathertweets.server import http_server, is_loopback
from weathertweets.services import archiver, counter, deferral
from weathertweets.services.consuming import Sink, consume
from weathertweets.services.deferral import Deferral
from weathertweets.services.errors import APP_ERRORS
from weathertweets.services.gateway import Gateway
from weathertweets.services.live import LiveFeed
from weathertweets.services.ops import Check, add_ops_routes
from weathertweets.services.publishing import BrokerPublisher
from weathertweets.services.writes import WriteGuard
from weathertweets.web import Router
from weathertweets.workers import GatewayWorkers, stop_when_orphaned

if TYPE_CHECKING:
    from weathertweets.services.ingest_client import IngestClient

log = logging.getLogger("weathertweets")


class ServiceFailed(RuntimeError):
    """A background task died; the process stopped because of it."""


class Startable(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


B = TypeVar("B", bound=Startable)


@asynccontextmanager
async def started(backend: B) -> AsyncIterator[B]:
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


class Supervisor:
    """Watches background tasks: the first to die stops everything, and says why."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self.failures: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("%s died; stopping", task.get_name(), exc_info=task.exception())
        TASK_FAILURES.labels(task.get_name()).inc()
        self.failures.append(task.get_name())
        self.stopping.set()

    async def check(self) -> None:
        """A readiness check: fails once any task died."""
        if self.failures:
            raise BackendUnavailable(f"background task died: {', '.join(self.failures)}")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class Context:
    """What a service's start needs: settings, the opened backends, the process's helpers."""

    settings: Settings
    stack: AsyncExitStack
    supervisor: Supervisor
    announce: Callable[[str], None]
    alone: bool
    energy: energy.EnergyModel
    broker: Broker | None = None
    store: Store | None = None
    counters: Counters | None = None
    idempotency: Idempotency | None = None
    checks: dict[str, Check] = field(default_factory=dict)
    frontend: Callable[[Gateway], Any] | None = None  # another HTTP layer (the bench compares)
    deferral: Deferral | None = None  # the process's sinks', told by `stack` when to wait

    def guard(self) -> WriteGuard:
        keys = load_keys(self.settings.api_keys, self.settings.api_keys_file)
        access = Access(keys, load_keys(self.settings.read_keys))
        return WriteGuard(access, RateLimiter(self.settings.rate_limit), self.idempotency)

    async def serve_ops(self, service: str, port: int, extra: Router | None = None) -> None:
        """A standalone service's own HTTP port: probes, metrics (and `extra`'s routes)."""
        router = extra or Router(service, APP_ERRORS)
        add_ops_routes(router, self.checks)
        await self.stack.enter_async_context(http_server(router, self.settings.host, port))


@dataclass(frozen=True)
class Service:
    name: str
    needs: frozenset[str]  # of "broker", "store", "counters"
    start: Callable[[Context], Awaitable[None]]


async def _consumer(ctx: Context, group: str, sink: Sink) -> None:
    assert ctx.broker is not None
    consumer = ctx.broker.consumer(group)
    drain = asyncio.Event()
    if ctx.deferral is None:
        ctx.deferral = Deferral()
        ctx.deferral.install(asyncio.get_running_loop())
    work = consume(
        group,
        consumer,
        sink,
        drain,
        ctx.broker.dead_letter,
        accept_unknown_countries=ctx.settings.accept_unknown_countries,
        deferral=ctx.deferral,
    )
    task = ctx.supervisor.spawn(group, work)

    async def stop() -> None:
        drain.set()
        await asyncio.gather(task, return_exceptions=True)  # a failure was logged already
        await consumer.close()

    ctx.stack.push_async_callback(stop)


async def _start_archiver(ctx: Context) -> None:
    assert ctx.store is not None
    await _consumer(ctx, archiver.GROUP, archiver.archive_sink(ctx.store))
    if ctx.settings.archive_retention_days > 0:
        keep = timedelta(days=ctx.settings.archive_retention_days)
        expiry = ctx.supervisor.spawn("archive-retention", archiver.expire_forever(ctx.store, keep))

        async def stop_expiry() -> None:  # before the store closes
            expiry.cancel()
            await asyncio.gather(expiry, return_exceptions=True)

        ctx.stack.push_async_callback(stop_expiry)
    if ctx.alone:
        await ctx.serve_ops("archiver", ctx.settings.archiver_port)
        ctx.announce(
            f"archiver: metrics on http://{ctx.settings.host}:{ctx.settings.archiver_port}"
        )


async def _start_counter(ctx: Context) -> None:
    assert ctx.counters is not None
    await _consumer(ctx, counter.GROUP, counter.count_sink(ctx.counters))
    if ctx.alone:  # the original's counter API: `POST /set` on its own port (the gateway too)
        router = Router("counter", APP_ERRORS)
        accept = ctx.settings.accept_unknown_countries
        router.add("POST", "/set", counter.set_handler(ctx.counters, accept, ctx.guard()))
        await ctx.serve_ops("counter", ctx.settings.counter_port, router)
        ctx.announce(
            f"counter: POST /set on http://{ctx.settings.host}:{ctx.settings.counter_port}"
        )


async def _start_ingest(ctx: Context) -> None:
    from weathertweets.services.ingest import start_ingest_server  # gRPC: where it serves only

    assert ctx.broker is not None
    address = f"{ctx.settings.host}:{ctx.settings.ingest_port}"
    server = await start_ingest_server(
        ctx.broker,
        address,
        ctx.settings.accept_unknown_countries,
        token=ctx.settings.internal_token,
        max_batch=ctx.settings.max_batch,
    )
    ctx.stack.push_async_callback(server.stop, 10)
    ctx.announce(f"ingest: gRPC on {address}")
    if ctx.alone:
        await ctx.serve_ops("ingest", ctx.settings.ingest_metrics_port)


async def _start_gateway(ctx: Context) -> None:
    assert ctx.store is not None and ctx.counters is not None
    settings = ctx.settings
    publisher: BrokerPublisher | IngestClient
    if ctx.broker is not None:  # ingest runs here too, or the gateway publishes by itself
        publisher = BrokerPublisher(ctx.broker)
    else:
        from weathertweets.services.ingest_client import IngestClient  # gRPC: only as a client

        publisher = IngestClient(
            settings.ingest_target, max_batch=settings.max_batch, token=settings.internal_token
        )
        ctx.stack.push_async_callback(publisher.close)
        ctx.checks["ingest"] = publisher.ping
    scope = (
        "this gateway process only; each service exports its own estimate"
        if ctx.alone
        else "this process, which runs every service"
    )
    live = LiveFeed(ctx.store, ctx.counters, ctx.energy, settings.grid_gco2_per_kwh, scope)
    history = ctx.supervisor.spawn("live-history", live.keep_history())
    gateway = Gateway(
        publisher,
        ctx.store,
        ctx.counters,
        max_batch=settings.max_batch,
        live=live,
        checks=ctx.checks,
        access_log=settings.access_log,
        accept_unknown_countries=settings.accept_unknown_countries,
        guard=ctx.guard(),
        max_concurrent=settings.max_concurrent,
    )
    app = gateway.app if ctx.frontend is None else ctx.frontend(gateway)
    await ctx.stack.enter_async_context(
        http_server(app, settings.host, settings.port, settings.reuse_port)
    )

    async def stop_live() -> None:  # runs first: open dashboards let go at once
        await live.close()
        history.cancel()
        await asyncio.gather(history, return_exceptions=True)

    ctx.stack.push_async_callback(stop_live)
    ctx.announce(f"gateway: http://{settings.host}:{settings.port}")


SERVICES: dict[str, Service] = {  # in start order; stopped in reverse
    "archiver": Service("archiver", frozenset({"broker", "store"}), _start_archiver),
    "counter": Service("counter", frozenset({"broker", "counters", "idempotency"}), _start_counter),
    "ingest": Service("ingest", frozenset({"broker"}), _start_ingest),
    "gateway": Service("gateway", frozenset({"store", "counters", "idempotency"}), _start_gateway),
}


async def _start_workers(ctx: Context, count: int, with_ingest: bool) -> GatewayWorkers:
    """The gateway as `count` processes on one port; this one serves its own probes and
    metrics (the consumers', ingest's) on the ingest metrics port when it runs any service."""
    settings = ctx.settings
    if ctx.checks.keys() - {"tasks"}:
        await ctx.serve_ops("up", settings.ingest_metrics_port)
        ctx.announce(f"metrics: http://{settings.host}:{settings.ingest_metrics_port}/metrics")
    publish = "broker" if with_ingest else settings.gateway_publish
    workers = GatewayWorkers(settings, count, publish)
    ctx.stack.push_async_callback(workers.stop)  # if anything after this fails
    await workers.start()
    ctx.supervisor.spawn("gateway-workers", workers.watch(ctx.supervisor.stopping))
    ctx.announce(f"gateway: http://{settings.host}:{settings.port} ({count} processes)")
    return workers


def needs(settings: Settings, services: Sequence[str]) -> set[str]:
    """The backends these services open in one process."""
    needed: set[str] = set().union(*(SERVICES[name].needs for name in services))
    if "gateway" in services and settings.gateway_publish == "broker":
        needed.add("broker")
    return needed


def check_exposure(settings: Settings, services: Sequence[str]) -> None:
    """Refuse to take anonymous writes, or unauthenticated internal calls, from a network."""
    if is_loopback(settings.host) or settings.allow_anonymous:
        return
    writes = {"gateway", "counter"} & set(services)
    if writes and not load_keys(settings.api_keys, settings.api_keys_file):
        raise SettingError(
            f"refusing to take anonymous writes on {settings.host}: set WT_API_KEYS"
            " (or WT_API_KEYS_FILE), or pass --allow-anonymous"
        )
    if "ingest" in services and "gateway" not in services and not settings.internal_token:
        raise SettingError(
            f"refusing to serve ingest on {settings.host} without WT_INTERNAL_TOKEN"
            " (the gateway's shared secret), or pass --allow-anonymous"
        )


def _install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            log.warning("second %s: exiting without draining", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("%s: draining and stopping", signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


async def _open_backends(ctx: Context, needed: set[str]) -> None:
    settings = ctx.settings
    if any(
        url.startswith("sqlite:")
        for url in (settings.broker_url, settings.store_url, settings.counter_url)
    ):
        watch_data_dir(settings.data_dir.resolve())
    if "broker" in needed:
        broker = open_broker(
            settings.broker_url,
            topic=settings.topic,
            partitions=settings.partitions,
            partition=settings.broker_partition,
            retention=Retention(
                max_age_s=settings.broker_retention_hours * 3600,
                max_bytes=settings.broker_retention_bytes,
                force=settings.broker_retention_force,
            ),
        )
        ctx.broker = await ctx.stack.enter_async_context(started(broker))
        ctx.checks["broker"] = ctx.broker.ping
    if "store" in needed:
        store = open_store(settings.store_url, collection=settings.store_collection)
        ctx.store = await ctx.stack.enter_async_context(started(store))
        ctx.checks["store"] = ctx.store.ping
    if "counters" in needed:
        counters = open_counters(
            settings.counter_url, prefix=settings.counter_prefix, seed_keys=settings.seed_keys
        )
        ctx.counters = await ctx.stack.enter_async_context(started(counters))
        ctx.checks["counters"] = ctx.counters.ping
    if "idempotency" in needed:
        keys = open_idempotency(settings.counter_url, prefix=settings.counter_prefix)
        ctx.idempotency = await ctx.stack.enter_async_context(started(keys))


def serve_forever(main: Coroutine[Any, Any, None]) -> None:
    """Run the services' coroutine on uvloop when it is installed (it is with uvicorn[standard]):
    measured faster here than asyncio's own loop for the HTTP and gRPC paths."""
    collector.quiet()
    deferral.ignore_signals()
    try:
        _run_loop(main)
    finally:
        deferral.ignore_signals()


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def run(
    settings: Settings,
    services: Sequence[str],
    *,
    announce: Callable[[str], None] = print,
    stopping: asyncio.Event | None = None,
    frontend: Callable[[Gateway], Any] | None = None,
) -> None:
    """Run `services` until SIGINT/SIGTERM (or `stopping` is set), then stop them cleanly.

    Raises ServiceFailed when a background task died (after the orderly stop)."""
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(sorted(unknown))}")
    check_exposure(settings, services)
    if {"gateway", "ingest"} <= set(services) and not settings.internal_token:
        settings.internal_token = secrets.token_urlsafe(32)  # both ends in this process
    workers = settings.workers if "gateway" in services else 1
    here = [name for name in services if workers == 1 or name != "gateway"]
    chosen = [SERVICES[name] for name in SERVICES if name in here]
    label = chosen[0].name if len(chosen) == 1 and workers == 1 else "all"
    tracing.configure(settings.otlp_endpoint, label)
    stopping = stopping or asyncio.Event()
    _install_signal_handlers(stopping)
    supervisor = Supervisor(stopping)
    model = energy.register(label, settings.energy_min_watts, settings.energy_max_watts)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(supervisor.stop)
        alone = len(chosen) == 1 and workers == 1
        ctx = Context(settings, stack, supervisor, announce, alone, model)
        ctx.frontend = frontend
        ctx.checks["tasks"] = supervisor.check
        if settings.reuse_port:  # one of several workers: never outlive the parent
            supervisor.spawn("parent-watch", stop_when_orphaned(stopping))
        await _open_backends(ctx, needs(settings, here))
        names = [s.name for s in chosen]
        gateways = None
        if workers > 1:  # started before any gRPC server: a fork then is cleaner for gRPC
            gateways = await _start_workers(ctx, workers, "ingest" in here)
            names.append(f"gateway × {workers}")
        try:
            for service in chosen:
                await service.start(ctx)
        except BaseException:
            if gateways is not None:
                await gateways.stop()
            raise
        if gateways is not None:  # registered last, so stopped first: no tweet after the drain
            stack.push_async_callback(gateways.stop)
        collector.started()
        announce(f"ready: {', '.join(names)} (Ctrl-C stops)")
        await stopping.wait()
    if supervisor.failures:
        raise ServiceFailed(f"stopped because {', '.join(supervisor.failures)} died")
    announce("stopped cleanly")
