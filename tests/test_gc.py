"""The services run Python's cyclic collector rarely (`runtime.quiet_gc`). That is safe only
while a request, and each record the consumers take, leaves no reference cycle behind: garbage
that only the collector frees would then pile up between its passes. Every path of the write
API (accepted, replayed and refused) and both sinks, in one process as `up` runs them."""

from __future__ import annotations

import asyncio
import collections
import gc
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from weathertweets.config import Settings
from weathertweets.runtime import SERVICES, run

JSON = {"content-type": "application/json"}
TWEET = {"texto": "Calor sofocante", "pais": "Turquía"}


def _requests(round_: int) -> Iterator[tuple[str, str, bytes, dict[str, str], int]]:
    """(method, path, body, headers, the status it must get); tweets accepted: 14 a round."""
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
                if status == 202 and b"idempotent-replayed" not in str(answer.headers).encode():
                    accepted += json.loads(payload).get("accepted", 1)
    finally:
        connection.close()
    return accepted


def _stats(port: int) -> dict[str, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/api/v1/stats")
        stats: dict[str, int] = json.loads(connection.getresponse().read())
        return stats
    finally:
        connection.close()


async def _settled(port: int, accepted: int) -> None:
    for _ in range(300):
        stats = await asyncio.to_thread(_stats, port)
        if stats["total"] == stats["archived"] == accepted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stats} after {accepted} accepted")


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
                await asyncio.to_thread(_stats, settings.port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        accepted = await asyncio.to_thread(_exchange, settings.port, range(5))  # warm caches
        await _settled(settings.port, accepted)
        gc.collect()
        rounds = 60
        accepted += await asyncio.to_thread(_exchange, settings.port, range(5, 5 + rounds))
        await _settled(settings.port, accepted)
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        kinds = collections.Counter(type(thing).__name__ for thing in gc.garbage)
    finally:
        stopping.set()
        await service
    requests = rounds * len(list(_requests(0)))
    # One cycle a request or a record would be at least two objects each; the rest of the
    # process (timers, probes) may leave a few.
    assert found < requests // 10, kinds.most_common(10)
