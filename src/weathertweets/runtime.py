"""Run one service, several, or all of them in one process, and stop them in the right order.

Start: backends, consumers, ingest, gateway. Stop (SIGINT/SIGTERM): the reverse, so in-flight
requests finish, ingest flushes to the broker, and the consumers drain what is left.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, Protocol, TypeVar

import uvicorn

from weathertweets import energy
from weathertweets.backends import open_broker, open_counters, open_store
from weathertweets.config import Settings
from weathertweets.ports import Broker, Consumer, Counters, Store
from weathertweets.services import archiver, counter
from weathertweets.services.consuming import Sink, consume
from weathertweets.services.gateway import Gateway
from weathertweets.services.ingest import start_ingest_server
from weathertweets.services.ingest_client import IngestClient
from weathertweets.services.live import LiveFeed
from weathertweets.services.ops import Check, ops_router

log = logging.getLogger("weathertweets")

SERVICES = ("gateway", "ingest", "archiver", "counter")


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


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # our runtime owns the signals and the order of shutdown


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio: NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from error
    sock.set_inheritable(True)
    return sock


@asynccontextmanager
async def http_server(app: Any, host: str, port: int) -> AsyncIterator[None]:
    sock = bind(host, port)
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=15
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has a flag, no event
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
        raise OSError(f"HTTP server on {host}:{port} did not start")
    try:
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def consumer_task(group: str, consumer: Consumer, sink: Sink) -> AsyncIterator[None]:
    drain = asyncio.Event()
    task = asyncio.create_task(consume(group, consumer, sink, drain), name=group)
    try:
        yield
    finally:
        drain.set()
        try:
            await task
        finally:
            await consumer.close()


@asynccontextmanager
async def ingest_service(broker: Broker, address: str) -> AsyncIterator[None]:
    server = await start_ingest_server(broker, address)
    try:
        yield
    finally:
        await server.stop(grace=10)


@asynccontextmanager
async def ingest_client(target: str, max_batch: int) -> AsyncIterator[IngestClient]:
    client = IngestClient(target, max_batch=max_batch)
    try:
        yield client
    finally:
        await client.close()


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


async def run(
    settings: Settings,
    services: Sequence[str],
    *,
    announce: Callable[[str], None] = print,
    stopping: asyncio.Event | None = None,
) -> None:
    """Run `services` until SIGINT/SIGTERM (or `stopping` is set), then stop them cleanly."""
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(sorted(unknown))}")
    stopping = stopping or asyncio.Event()
    _install_signal_handlers(stopping)
    service_label = services[0] if len(services) == 1 else "all"
    model = energy.register(service_label, settings.energy_min_watts, settings.energy_max_watts)
    alone = len(services) == 1
    async with AsyncExitStack() as stack:
        broker: Broker | None = None
        store: Store | None = None
        counters: Counters | None = None
        if {"ingest", "archiver", "counter"} & set(services):
            broker = await stack.enter_async_context(
                started(
                    open_broker(
                        settings.broker_url, topic=settings.topic, partitions=settings.partitions
                    )
                )
            )
        if {"gateway", "archiver"} & set(services):
            store = await stack.enter_async_context(
                started(open_store(settings.store_url, collection=settings.store_collection))
            )
        if {"gateway", "counter"} & set(services):
            counters = await stack.enter_async_context(
                started(
                    open_counters(
                        settings.counter_url,
                        prefix=settings.counter_prefix,
                        seed_keys=settings.seed_keys,
                    )
                )
            )

        if "archiver" in services:
            assert broker is not None and store is not None
            consumer = broker.consumer(archiver.GROUP)
            sink = archiver.archive_sink(store)
            await stack.enter_async_context(consumer_task(archiver.GROUP, consumer, sink))
            if alone:
                checks: dict[str, Check] = {"broker": broker.ping, "store": store.ping}
                app = ops_router("archiver", checks)
                await stack.enter_async_context(
                    http_server(app, settings.host, settings.archiver_port)
                )
                announce(
                    f"archiver: metrics on http://{settings.host}:{settings.archiver_port}/metrics"
                )

        if "counter" in services:
            assert broker is not None and counters is not None
            consumer = broker.consumer(counter.GROUP)
            await stack.enter_async_context(
                consumer_task(counter.GROUP, consumer, counter.count_sink(counters))
            )
            if alone:  # the original's counter API: `POST /set` on its own port (the gateway too)
                app = ops_router("counter", {"broker": broker.ping, "counters": counters.ping})
                app.add("POST", "/set", counter.set_handler(counters))
                await stack.enter_async_context(
                    http_server(app, settings.host, settings.counter_port)
                )
                announce(f"counter: POST /set on http://{settings.host}:{settings.counter_port}")

        if "ingest" in services:
            assert broker is not None
            address = f"{settings.host}:{settings.ingest_port}"
            await stack.enter_async_context(ingest_service(broker, address))
            announce(f"ingest: gRPC on {address}")
            if alone:
                app = ops_router("ingest", {"broker": broker.ping})
                port = settings.ingest_metrics_port
                await stack.enter_async_context(http_server(app, settings.host, port))

        if "gateway" in services:
            assert store is not None and counters is not None
            client = await stack.enter_async_context(
                ingest_client(settings.ingest_target, settings.max_batch)
            )
            scope = (
                "this gateway process only; each service exports its own estimate"
                if alone
                else "this process, which runs every service"
            )
            live = LiveFeed(store, counters, model, settings.grid_gco2_per_kwh, scope)
            gateway = Gateway(
                client,
                store,
                counters,
                max_batch=settings.max_batch,
                live=live,
            )
            await stack.enter_async_context(
                http_server(gateway.router, settings.host, settings.port)
            )
            stack.push_async_callback(live.close)  # runs first: open dashboards let go at once
            announce(f"gateway: http://{settings.host}:{settings.port}")

        announce(f"ready: {', '.join(s for s in SERVICES if s in services)} (Ctrl-C stops)")
        await stopping.wait()
    announce("stopped cleanly")
