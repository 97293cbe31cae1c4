"""The fault and abuse suite, on real processes (and real engines where it says so): what a
hostile client or an operator pulling plugs does, and what must still hold."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from tests.conftest import Pipeline, ServiceProcess, free_port
from tests.engines import RealNamespace
from tests.private_engines import PrivateKafka, PrivateMongo, PrivateRedis
from weathertweets.client import ApiError, AsyncClient, Retries
from weathertweets.domain import make_tweet
from weathertweets.gendata import generate
from weathertweets.proto import ingest_pb2, ingest_pb2_grpc
from weathertweets.rpc_codec import to_pb

pytestmark = pytest.mark.e2e
KEY = "abuse-key-0123456789"
WRITE = {"authorization": f"Bearer {KEY}"}


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _raw(port: int, request: bytes, wait: float = 5) -> bytes:
    """Send raw bytes; what came back before the server closed (or `wait` passed)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(wait)
        with contextlib.suppress(OSError):  # the server may close mid-send: its answer counts
            sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def test_keys_and_idempotency_keys_on_a_real_process(pipeline: Pipeline) -> None:
    pipeline.env = {"WT_API_KEYS": KEY}
    pipeline.start()
    tweet = {"texto": "Granizo", "pais": "Chile"}
    with httpx.Client(base_url=pipeline.url, timeout=10) as http:
        assert http.post("/input", json=tweet).status_code == 401
        keyed = {**WRITE, "idempotency-key": "twice"}
        first, again = (http.post("/input", json=tweet, headers=keyed) for _ in range(2))
        assert (first.status_code, again.status_code) == (202, 202)
        assert first.json() == again.json()
    settled = pipeline.wait_settled(1)
    assert settled["total"] == settled["archived"] == 1


def test_hostile_http_gets_4xx_and_bounded_memory(pipeline: Pipeline) -> None:
    pipeline.start()
    port = pipeline.port
    assert pipeline.process is not None and pipeline.process.proc is not None
    pid = pipeline.process.proc.pid
    before = _rss_kb(pid)
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * (1 << 20) + b"\r\n\r\n"
    for _ in range(4):
        assert _raw(port, huge).startswith(b"HTTP/1.1 431 ")
    assert _rss_kb(pid) - before < 30_000  # a 1 MiB header costs at most the limit
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    assert _raw(port, many + b"\r\n").startswith(b"HTTP/1.1 431 ")
    with httpx.Client(base_url=pipeline.url, timeout=10) as http:
        deep = http.post(
            "/input",
            content=b"[" * 1000 + b"]" * 1000,
            headers={"content-type": "application/json"},
        )
        assert deep.status_code == 400
        narnia = http.post("/input", json={"texto": "Nieve", "pais": "Narnia"})
        assert narnia.status_code == 422 and narnia.json()["error"]["field"] == "pais"
    started = time.monotonic()
    slow_head = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", wait=30)
    assert slow_head.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 20
    started = time.monotonic()
    unfinished = (
        b"POST /input HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b'transfer-encoding: chunked\r\n\r\n5\r\n{"tex'
    )
    answer = _raw(port, unfinished, wait=40)
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 30
    assert pipeline.stats()["total"] == 0  # none of it counted


def test_hostile_grpc_is_invalid_argument_and_memory_stays_flat(pipeline: Pipeline) -> None:
    pipeline.env = {"WT_INTERNAL_TOKEN": "t0k3n"}
    pipeline.start()
    auth = (("authorization", "Bearer t0k3n"),)
    assert pipeline.process is not None and pipeline.process.proc is not None
    pid = pipeline.process.proc.pid
    before = _rss_kb(pid)
    tiny = ingest_pb2.Tweet(texto="a", pais="b").SerializeToString()
    million = b"".join(b"\x0a" + bytes([len(tiny)]) + tiny for _ in range(1_000_000))
    with grpc.insecure_channel(
        f"127.0.0.1:{pipeline.ingest_port}", options=[("grpc.max_send_message_length", 1 << 25)]
    ) as channel:
        raw_batch = channel.unary_unary("/weathertweets.v1.TweetIngest/PublishBatch")
        for payload in (million, b"\xff\xfe garbage"):
            with pytest.raises(grpc.RpcError) as refused:
                raw_batch(payload, timeout=30, metadata=auth)  # even the gateway may not
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
            assert len(refused.value.details() or "") < 200
            with pytest.raises(grpc.RpcError) as stranger:
                raw_batch(payload, timeout=30)  # anyone else is turned away before a look
            assert stranger.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub = ingest_pb2_grpc.TweetIngestStub(channel)
        foreign = to_pb(make_tweet("Sol", "Chile"))
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.Publish(foreign, timeout=10)  # no internal token: not the gateway
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _rss_kb(pid) - before < 60_000  # rejected before decoding: no million objects
    assert pipeline.stats()["total"] == 0


def test_trusted_ids_are_still_checked(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    env = {"WT_INTERNAL_TOKEN": "t0k3n", "WT_INGEST_PORT": str(port)}
    env |= {"WT_INGEST_METRICS_PORT": str(metrics), "WT_DATA_DIR": str(tmp_path)}
    ingest = ServiceProcess(["serve", "ingest"], tmp_path / "ingest.log", env).start()
    try:
        ingest.wait_ready(f"http://127.0.0.1:{metrics}/readyz")
        tweet = to_pb(make_tweet("Sol", "Chile"))
        far = ingest_pb2.Tweet()
        far.CopyFrom(tweet)
        far.received_at_us = 2**63 - 1
        auth = (("authorization", "Bearer t0k3n"),)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ingest_pb2_grpc.TweetIngestStub(channel)
            for batch in ([tweet, tweet], [far]):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.PublishBatch(
                        ingest_pb2.TweetBatch(tweets=batch), metadata=auth, timeout=10
                    )
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert stub.Publish(tweet, metadata=auth, timeout=10).id == tweet.id
            other = {**env, "WT_INGEST_METRICS_PORT": str(free_port())}
            second = ServiceProcess(["serve", "ingest"], tmp_path / "second.log", other).start()
            assert second.proc is not None and second.proc.wait(30) == 2
            assert f"cannot listen for gRPC on 127.0.0.1:{port}" in second.output
    finally:
        ingest.stop()


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["up", "--host", "0.0.0.0"], {}, "refusing to take anonymous writes on 0.0.0.0"),
        (["serve", "ingest", "--host", "0.0.0.0"], {}, "without WT_INTERNAL_TOKEN"),
        (["up"], {"WT_DATA_DIR": "/dev/null/data"}, "error: "),
        (["serve", "ingest"], {"WT_BROKER_URL": "kafka://127.0.0.1:9"}, "error: Kafka"),
    ],
)
def test_startup_errors_are_one_line(args: list[str], env: dict[str, str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "weathertweets.cli", *args, "--port", str(free_port())]
        if args[0] == "up"
        else [sys.executable, "-m", "weathertweets.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "WT_INGEST_PORT": str(free_port()), **env},
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr


# --- Engines stalled: real Kafka, Redis and MongoDB-wire servers of the test's own ------------


async def _send_retrying(
    url: str, records: list[dict[str, str]], deadline: float
) -> dict[str, str]:
    """Every record posted with its own Idempotency-Key, each non-2xx retried with that key
    until accepted: {key: id}."""
    accepted: dict[str, str] = {}
    retries = Retries(attempts=1)

    async def one(client: AsyncClient, record: dict[str, str]) -> None:
        key = uuid.uuid4().hex
        while time.monotonic() < deadline:
            try:
                accepted[key] = await client.publish(
                    record["texto"], record["pais"], idempotency_key=key
                )
                return
            except (ApiError, httpx.HTTPError):
                await asyncio.sleep(0.5)
        raise AssertionError(f"never accepted: {record}")

    async with AsyncClient(url, timeout=30, retries=retries, max_connections=16) as client:
        queue = list(records)

        async def worker() -> None:
            while queue:
                await one(client, queue.pop())

        await asyncio.gather(*(worker() for _ in range(8)))
    return accepted


def _up(tmp_path: Path, env: dict[str, str]) -> tuple[ServiceProcess, str]:
    """`weathertweets up` on free ports with these engines; its gateway's URL."""
    env = {**env, "WT_PORT": str(free_port()), "WT_INGEST_PORT": str(free_port())}
    command = ["up", "--data-dir", str(tmp_path / "up")]
    return ServiceProcess(
        command, tmp_path / "up.log", env
    ).start(), f"http://127.0.0.1:{env['WT_PORT']}"


def test_kafka_stalled_while_clients_retry_with_keys_is_exact(tmp_path: Path) -> None:
    kafka = PrivateKafka(tmp_path)
    kafka.start()
    namespace = RealNamespace.fresh()
    up, url = _up(tmp_path, {**namespace.env, "WT_BROKER_URL": kafka.url})
    records = generate(400, seed=81)
    try:
        up.wait_ready(url + "/readyz", timeout=90)

        async def scenario() -> dict[str, str]:
            sending = asyncio.create_task(_send_retrying(url, records, time.monotonic() + 150))
            await asyncio.sleep(2)
            kafka.pause()  # SIGSTOP: answers stop, connections stay open
            await asyncio.sleep(15)
            kafka.resume()
            return await sending

        accepted = asyncio.run(scenario())
        assert len(accepted) == 400 and len(set(accepted.values())) == 400
        namespace.wait_exact(400, timeout=180)  # archived once, counted once, each
    finally:
        up.stop(timeout=60)
        kafka.kill()


@pytest.mark.parametrize("stalled", ["redis", "mongo"])
def test_a_stalled_store_or_counters_is_503_within_3_s_then_exact(
    tmp_path: Path, stalled: str
) -> None:
    engine: PrivateRedis | PrivateMongo = (
        PrivateRedis(tmp_path) if stalled == "redis" else PrivateMongo(tmp_path)
    )
    engine.start()
    namespace = RealNamespace.fresh()
    key = "WT_COUNTER_URL" if stalled == "redis" else "WT_STORE_URL"
    env = {**namespace.env, key: engine.url}
    namespace = RealNamespace(env, namespace.tag) if stalled == "redis" else namespace
    up, url = _up(tmp_path, env)
    records = generate(300, seed=91)
    try:
        up.wait_ready(url + "/readyz", timeout=90)
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.post("/api/v1/tweets", json=records[:150]).status_code == 202
            engine.pause()
            started = time.monotonic()
            stats = http.get("/api/v1/stats")
            assert stats.status_code == 503 and stats.headers["retry-after"]
            assert time.monotonic() - started < 3.5
            assert http.post("/api/v1/tweets", json=records[150:]).status_code == 202
            engine.resume()
        if stalled == "redis":
            namespace.wait_exact(300, timeout=120)
        else:
            deadline = time.monotonic() + 120
            while True:
                stats_now = httpx.get(url + "/api/v1/stats", timeout=30).json()
                if stats_now["total"] == stats_now["archived"] == 300:
                    break
                assert time.monotonic() < deadline, stats_now
                time.sleep(0.5)
    finally:
        engine.resume() if engine.process and engine.process.poll() is None else None
        up.stop(timeout=60)
        engine.kill()


def test_the_load_and_locust_tools_send_keys() -> None:
    from weathertweets.client import write_headers

    assert "write_headers(API_KEY)" in (Path(__file__).parent.parent / "locustfile.py").read_text()
    first, second = write_headers("k"), write_headers("k")
    assert first["idempotency-key"] != second["idempotency-key"]  # one key per write
    assert first["authorization"] == "Bearer k"


async def test_junk_texts_cannot_grow_the_redis_counters_without_bound() -> None:
    from redis.asyncio import Redis

    from weathertweets.backends.redis_counters import RedisCounters
    from weathertweets.ports import CountedTweet

    namespace = RealNamespace.fresh()
    prefix, url = namespace.env["WT_COUNTER_PREFIX"], namespace.env["WT_COUNTER_URL"]
    counters = RedisCounters(url, prefix, seed_keys=False, text_cap=5)
    await counters.start()
    await counters.apply("counter", [CountedTweet(0, i, "Chile", "Sol") for i in range(10)])
    for start in range(0, 200, 50):  # 200 junk texts, in batches
        junk = [CountedTweet(1, start + i, "Chile", f"junk {start + i}") for i in range(50)]
        await counters.apply("counter", junk)
    stats = await counters.stats()
    await counters.close()
    redis = Redis.from_url(url)
    sizes = [await redis.hlen(f"{prefix}country:Chile"), await redis.hlen(f"{prefix}texts")]
    await redis.aclose()
    assert all(size <= 6 for size in sizes), sizes  # the cap, plus the 20 % slack
    assert stats.countries["Chile"] == stats.total == 210  # totals stay exact
    assert stats.top_texts[0] == ("Sol", 10)


async def test_an_answer_for_an_expired_key_does_not_poison_it() -> None:
    from weathertweets.backends.redis_idempotency import RedisIdempotency

    namespace = RealNamespace.fresh()
    keys = RedisIdempotency(namespace.env["WT_COUNTER_URL"], namespace.env["WT_COUNTER_PREFIX"])
    await keys.start()
    try:
        await keys.complete("caller", "gone", 202, b"{}")  # the claim expired meanwhile
        claim = await keys.claim("caller", "gone", "fp", 123)
        assert (claim.fingerprint, claim.received_at_us, claim.status) == ("fp", 123, None)
    finally:
        await keys.close()
