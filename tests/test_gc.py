"""The services run Python's cyclic collector rarely (`collector.quiet`). That is safe only
while a request, and each record the consumers take, leaves no reference cycle behind (or none
that holds much): garbage that only the collector frees waits for its next pass. Every path of
the write API (accepted, replayed and refused) and both sinks, in one process as `up` runs
them; the refusals of a broker outage; any error a handler raises; a failed SQLite job; a
refused gRPC call; and the full pass every second that frees whatever still does."""

from __future__ import annotations

import asyncio
import collections
import gc
import http.client
import json
import logging
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from tests.conftest import free_port
from weathertweets.access import Access
from weathertweets.backends.sqlite import SqliteThread
from weathertweets.backends.sqlite_broker import SqliteBroker
from weathertweets.backends.sqlite_counters import SqliteCounters
from weathertweets.backends.sqlite_idempotency import SqliteIdempotency
from weathertweets.backends.sqlite_store import SqliteStore
from weathertweets.batching import Batcher
from weathertweets.config import Settings
from weathertweets.ports import BackendUnavailable, Broker, Record
from weathertweets.runtime import SERVICES, run
from weathertweets.server import http_server
from weathertweets.services.errors import APP_ERRORS
from weathertweets.services.gateway import Gateway
from weathertweets.services.ingest import start_ingest_server
from weathertweets.services.publishing import BrokerPublisher
from weathertweets.services.writes import WriteGuard
from weathertweets.web import Request, Response, Router

JSON = {"content-type": "application/json"}
TWEET = {"texto": "Calor sofocante", "pais": "Turquía"}


def _requests(round_: int) -> Iterator[tuple[str, str, bytes, dict[str, str], int]]:
    """(method, path, body, headers, the status it must get); tweets accepted: 15 a round."""
    single = json.dumps(TWEET).encode()
    batch = json.dumps([TWEET] * 10).encode()
    yield "POST", "/input", single, JSON, 202
    yield (
        "POST",
        "/insert/",
        b"texto=Niebla&pais=Chile",
        {"content-type": "application/x-www-form-urlencoded"},
        202,
    )
    yield "POST", "/api/v1/tweets", batch, JSON, 202
    keyed = {**JSON, "idempotency-key": f"gc-{round_}"}
    yield "POST", "/input", single, keyed, 202
    yield "POST", "/input", single, keyed, 202  # replayed: nothing published
    yield "POST", "/input", b'{"texto": "Lluvia"}', keyed, 422  # the key's other body
    yield "POST", "/input", b'{"texto": "", "pais": "Chile"}', JSON, 422
    yield "POST", "/input", b'{"texto": "x", "pais": ', JSON, 400
    yield "POST", "/input", single, {"content-type": "text/plain"}, 415
    yield "POST", "/input", b"x" * (70 * 1024), JSON, 413  # past the direct lane's size
    yield "POST", "/api/v1/tweets", b'[{"texto": "Sol", "pais": "Chile"}, {}]', JSON, 422
    yield (
        "POST",
        "/api/v1/tweets",
        b"\n".join([single] * 2),
        {"content-type": "application/x-ndjson"},
        202,
    )
    yield "GET", "/no/such/path", b"", {}, 404
    yield "GET", "/api/v1/stats", b"", {}, 200
    yield "GET", "/api/v1/tweets?limit=5", b"", {}, 200


def _garbage() -> tuple[int, list[tuple[str, int]]]:
    """What a pass of the collector finds now, and of what kinds."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    found = gc.collect()
    kinds = collections.Counter(type(thing).__name__ for thing in gc.garbage)
    return found, kinds.most_common(10)


def _exchange(port: int, rounds: range) -> int:
    """Each round's requests on one keep-alive connection (in a thread: no asyncio objects of
    the test's own in the count); the tweets accepted."""
    accepted = 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for round_ in rounds:
            for method, path, body, headers, status in _requests(round_):
                connection.request(method, path, body or None, headers)
                answer = connection.getresponse()
                payload = answer.read()
                assert answer.status == status, (method, path, answer.status, payload[:200])
                if status == 202 and answer.getheader("idempotent-replayed") is None:
                    accepted += json.loads(payload).get("accepted", 1)
    finally:
        connection.close()
    return accepted


def _stats(connection: http.client.HTTPConnection) -> dict[str, int]:
    connection.request("GET", "/api/v1/stats")
    stats: dict[str, int] = json.loads(connection.getresponse().read())
    return stats


def _ready(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        _stats(connection)
    finally:
        connection.close()


def _wait_settled(port: int, accepted: int) -> None:
    """Polls on one connection: a closed one leaves a cycle of asyncio's own (not uvloop's)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(300):
            stats = _stats(connection)
            if stats["total"] == stats["archived"] == accepted:
                return
            time.sleep(0.1)
    finally:
        connection.close()
    raise AssertionError(f"{stats} after {accepted} accepted")


async def _settled(port: int, accepted: int) -> None:
    await asyncio.to_thread(_wait_settled, port, accepted)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_requests_and_records_leave_no_reference_cycles(
    tmp_path: Path, collector_off: None
) -> None:
    settings = Settings.from_env({"WT_DATA_DIR": str(tmp_path), "WT_ACCESS_LOG": "0"})
    settings.port, settings.ingest_port = free_port(), free_port()
    settings.resolve()
    stopping = asyncio.Event()
    service = asyncio.create_task(
        run(settings, list(SERVICES), announce=lambda _: None, stopping=stopping)
    )
    try:
        for _ in range(300):
            assert not service.done(), service.result()
            try:
                await asyncio.to_thread(_ready, settings.port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        accepted = await asyncio.to_thread(_exchange, settings.port, range(5))  # warm caches
        await _settled(settings.port, accepted)
        gc.collect()
        rounds = 60
        accepted += await asyncio.to_thread(_exchange, settings.port, range(5, 5 + rounds))
        await _settled(settings.port, accepted)
        found, kinds = _garbage()
    finally:
        stopping.set()
        await service
    requests = rounds * len(list(_requests(0)))
    # One cycle a request or a record would be at least two objects each; the rest of the
    # process (timers, probes) may leave a few.
    assert found < requests // 10, kinds


class UnreachableBroker:
    """Fails the way the real brokers do when theirs is down: inside a batch's flush, shared by
    every request in the batch."""

    def __init__(self) -> None:
        self._appender: Batcher[Record] = Batcher(self._flush)

    async def _flush(self, records: list[Record]) -> None:
        raise BackendUnavailable("broker unreachable")

    async def publish(self, records: list[Record]) -> None:
        await self._appender.submit(records)

    async def ping(self) -> None:
        raise BackendUnavailable("broker unreachable")


def _refused(port: int, rounds: range) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    single, batch = json.dumps(TWEET).encode(), json.dumps([TWEET] * 10).encode()
    try:
        for round_ in rounds:
            for path, body, key in [
                ("/input", single, ""),
                ("/input", single, f"gc-{round_}"),
                ("/api/v1/tweets", batch, ""),
            ]:
                headers = {**JSON, "idempotency-key": key} if key else JSON
                connection.request("POST", path, body, headers)
                answer = connection.getresponse()
                answer.read()
                assert answer.status == 503, answer.status
                assert answer.getheader("retry-after")
    finally:
        connection.close()


async def test_refusals_in_an_outage_leave_no_reference_cycles(
    tmp_path: Path, collector_off: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure travels up from the flush through every request that waited on it, and a
    traceback holds the frames it crossed: the response must not leave them in a cycle."""
    caplog.set_level(logging.ERROR, "weathertweets")  # kept records would keep the failures
    store, counters = SqliteStore(tmp_path / "s.db"), SqliteCounters(tmp_path / "c.db")
    keys = SqliteIdempotency(tmp_path / "c.db")
    for backend in (store, counters, keys):
        await backend.start()
    guard = WriteGuard(Access(), idempotency=keys)
    publisher = BrokerPublisher(cast(Broker, UnreachableBroker()))  # it publishes and pings
    gateway = Gateway(publisher, store, counters, guard=guard)
    port = free_port()
    try:
        async with http_server(gateway.app, "127.0.0.1", port):
            await asyncio.to_thread(_refused, port, range(5))
            gc.collect()
            rounds = 100
            await asyncio.to_thread(_refused, port, range(5, 5 + rounds))
            found, kinds = _garbage()
    finally:
        for backend in (store, counters, keys):
            await backend.close()
    assert found < rounds * 3 // 10, kinds


async def test_an_answered_error_takes_no_frame_with_it(collector_off: None) -> None:
    """Whatever a handler raised, once it is a response its traceback is let go: a frame that
    held the error (here a failed future it awaited) would otherwise make a cycle with it."""

    async def fails(_: Request) -> Response:
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(BackendUnavailable("down"))
        await failed
        raise AssertionError("unreachable")

    router = Router("test", APP_ERRORS)
    router.add("POST", "/p", fails)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    for _ in range(20):
        scope = {"type": "http", "method": "POST", "path": "/p", "headers": []}
        assert (await router.respond(scope, receive)).status == 503
    found, kinds = _garbage()
    assert found == 0, kinds


async def test_a_failed_sqlite_job_takes_no_frame_with_it(
    tmp_path: Path, collector_off: None
) -> None:
    thread = SqliteThread(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (x)", "test")
    await thread.open()

    def fails(_: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    try:
        gc.collect()
        for _ in range(50):
            with pytest.raises(BackendUnavailable):
                await thread.run(fails)
        found, kinds = _garbage()
    finally:
        await thread.close()
    assert found < 50, kinds


GRPC_CLIENT = """
import sys, grpc
from weathertweets.proto import confproto_pb2, confproto_pb2_grpc, ingest_pb2, ingest_pb2_grpc
options = [("grpc.max_send_message_length", 8 << 20)]
with grpc.insecure_channel(sys.argv[1], options=options) as channel:
    info, ingest = confproto_pb2_grpc.getInfoStub(channel), ingest_pb2_grpc.TweetIngestStub(channel)
    big = "x" * (1 << 20)
    calls = [
        lambda: info.returnInfo(confproto_pb2.requestId(texto=big, pais="Chile"), timeout=10),
        lambda: ingest.Publish(ingest_pb2.Tweet(texto=big, pais="Chile"), timeout=10),
        lambda: ingest.PublishBatch(
            ingest_pb2.TweetBatch(tweets=[ingest_pb2.Tweet(texto=big, pais="Chile")]), timeout=10
        ),
    ]
    for _ in range(int(sys.argv[2])):
        for call in calls:
            try:
                call()
                raise SystemExit("accepted a 1 MB text")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
"""


async def test_a_refused_grpc_call_leaves_no_message_behind(
    tmp_path: Path, collector_off: None
) -> None:
    """An abort leaves a small cycle in grpc's call state; the request's bytes must not be in
    it (a 16 MB message a call otherwise, to whoever reaches the port)."""
    broker = SqliteBroker(tmp_path / "broker.db")
    await broker.start()
    address = f"127.0.0.1:{free_port()}"
    server = await start_ingest_server(broker, address)

    async def client(rounds: int) -> None:
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-c", GRPC_CLIENT, address, str(rounds)
        )
        assert await done.wait() == 0

    try:
        await client(1)
        gc.collect()
        tracemalloc.start()
        try:
            await client(10)
            before = tracemalloc.get_traced_memory()[0]
            gc.collect()
            held = before - tracemalloc.get_traced_memory()[0]  # what only the pass freed
        finally:
            tracemalloc.stop()
    finally:
        await server.stop(grace=1)
        await broker.close()
    assert held < 1 << 20, f"{held} bytes of 30 refused 1 MB requests waited for the collector"


def test_a_service_frees_a_cycle_within_about_a_second() -> None:
    """Whatever does make a cycle: the full pass every second (`collector.started`), in a
    process of its own (it freezes and retunes the collector)."""
    program = """
import asyncio, gc, weakref
from weathertweets import collector
collector.quiet()
class Node: pass
async def main():
    collector.started()
    node = Node(); node.self = node; node.blob = bytes(10 << 20)
    gone = weakref.ref(node)
    del node
    for _ in range(30):
        if gone() is None:
            break
        await asyncio.sleep(0.1)
    assert gone() is None, "still held after 3 s"
asyncio.run(main())
assert gc.get_threshold() == collector.THRESHOLDS
"""
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60)
