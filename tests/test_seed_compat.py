"""Drop-in at every boundary of the original system: each test plays one of its clients.

- its Locust file, host ending in `/insert`;
- its HTTP body parser's form and multipart bodies;
- its Go gRPC client (`/confproto.getInfo/returnInfo`, raw protobuf bytes);
- its Kafka producer (`{"texto","pais"}` records, no key), read back through its Grafana
  panels (`HGETALL <pais>` on Redis) and its archive readers (`timestamp` on MongoDB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit, urlunsplit

import grpc
import httpx
import pytest
from pymongo import MongoClient
from pymongo.collection import Collection
from redis import Redis

from tests.conftest import ROOT, Pipeline, ServiceProcess, free_port
from tests.dashboard_queries import DASHBOARDS, RedisQuery, queries
from tests.engines import RealNamespace
from weathertweets.gendata import generate

pytestmark = pytest.mark.e2e

SEED_COUNTER_DB = 9  # the original's hashes are bare keys: this test owns a Redis database


def test_the_originals_locust_file_with_host_ending_in_insert(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.start()
    data = tmp_path / "data.json"
    data.write_text(json.dumps(generate(300, seed=8)), encoding="utf-8")
    report = tmp_path / "stats.json"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "locust", "-f", str(ROOT / "tests" / "seed" / "traffic.py")),
            *("--headless", "-u", "10", "-r", "10", "--run-time", "120s", "--only-summary"),
            *("-H", pipeline.url + "/insert", "--json-file", str(report.with_suffix(""))),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SEED_DATA": str(data)},
        timeout=180,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats: list[dict[str, Any]] = json.loads(report.read_text())
    posts = sum(s["num_requests"] for s in stats if s["method"] == "POST")
    gets = sum(s["num_requests"] for s in stats if s["method"] == "GET")
    assert posts == 300 and gets > 0
    assert sum(s["num_failures"] for s in stats) == 0, stats
    settled = pipeline.wait_settled(300)
    assert settled["total"] == settled["archived"] == 300


def test_form_and_multipart_posts_are_counted_and_archived(pipeline: Pipeline) -> None:
    pipeline.start()
    with httpx.Client(base_url=pipeline.url, timeout=10) as http:
        form = http.post("/insert", data={"texto": "Lluvia", "pais": "Guatemala"})
        multipart = http.post("/", files={"texto": (None, "Neblina"), "pais": (None, "Chile")})
        bad = http.post("/input/", data={"texto": "Sol"})
    assert (form.status_code, multipart.status_code) == (202, 202)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "pais"
    pipeline.wait_settled(2)
    recent = httpx.get(pipeline.url + "/api/v1/tweets").json()["tweets"]
    assert {(t["texto"], t["pais"]) for t in recent} == {
        ("Lluvia", "Guatemala"),
        ("Neblina", "Chile"),
    }


def _protobuf_strings(*fields: str) -> bytes:
    """Fields 1, 2, … as proto3 strings, encoded by hand: the bytes the Go client sends."""
    out = b""
    for number, value in enumerate(fields, start=1):
        raw = value.encode()
        assert len(raw) < 128
        out += bytes([number << 3 | 2, len(raw)]) + raw
    return out


def test_the_originals_grpc_client(pipeline: Pipeline) -> None:
    pipeline.start()
    with grpc.insecure_channel(f"127.0.0.1:{pipeline.ingest_port}") as channel:
        return_info = channel.unary_unary("/confproto.getInfo/returnInfo")
        reply = return_info(_protobuf_strings("Tormenta eléctrica", "Honduras"), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            return_info(_protobuf_strings("", "Honduras"), timeout=10)
    assert reply[0] == 1 << 3 | 2  # replyInfo.info, a string
    assert reply[2:].decode().startswith("Tweet recibido: ")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert pipeline.wait_settled(1)["countries"] == {"Honduras": 1}


# --- The original's producer, Grafana panels and archive readers, on the real engines ----------


class Services:
    """The four services as separate processes on one real-engine namespace; restartable."""

    PORTS: ClassVar[dict[str, str]] = {
        "gateway": "WT_PORT",
        "ingest": "WT_INGEST_METRICS_PORT",
        "archiver": "WT_ARCHIVER_PORT",
        "counter": "WT_COUNTER_PORT",
    }

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env | {name: str(free_port()) for name in self.PORTS.values()}
        self.env["WT_INGEST_PORT"] = str(free_port())
        self.logs = logs
        self.running: dict[str, ServiceProcess] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.env[self.PORTS[name]]}"

    def start(self, *names: str) -> None:
        for name in names:
            log = self.logs / f"{name}-{time.monotonic_ns()}.log"
            self.running[name] = ServiceProcess(["serve", name], log, self.env).start()
            self.running[name].wait_ready(self.url(name) + "/readyz", timeout=90)

    def stop(self, *names: str) -> None:
        for name in names or tuple(self.running):
            assert self.running.pop(name).stop(timeout=60) == 0


def _produce_like_the_original(broker_url: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": urlsplit(broker_url).netloc})
    for value in values:
        producer.produce(topic, value)  # no key, no headers: the original's kafka-go writer
    assert producer.flush(30) == 0


def _rewind(broker_url: str, topic: str, groups: list[str]) -> None:
    """Set the groups back to the first record, as a reprocessing operator would."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": urlsplit(broker_url).netloc})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    for group in groups:
        start = [TopicPartition(topic, p, 0) for p in partitions]
        request = [ConsumerGroupTopicPartitions(group, start)]
        for future in admin.alter_consumer_group_offsets(request).values():
            moved = future.result(timeout=30)
            errors = [p.error for p in moved.topic_partitions if p.error is not None]
            assert not errors, f"{group} was not rewound: {errors} (is a member still up?)"


def _seed_hash_totals(redis: Redis, countries: list[str]) -> dict[str, int]:
    return {pais: sum(int(n) for n in _hvals(redis, pais)) for pais in countries}


def _hvals(redis: Redis, key: str) -> list[str]:
    return cast(list[str], redis.hvals(key))  # the sync client's stubs also allow an Awaitable


def test_the_originals_producer_dashboards_and_archive_readers(tmp_path: Path) -> None:
    namespace = RealNamespace.fresh()
    counter_url = urlunsplit(
        urlsplit(namespace.env["WT_COUNTER_URL"])._replace(path=f"/{SEED_COUNTER_DB}")
    )
    env = {**namespace.env, "WT_COUNTER_URL": counter_url, "WT_DATA_DIR": str(tmp_path)}
    namespace = RealNamespace(env, namespace.tag)
    redis = Redis.from_url(counter_url, decode_responses=True)
    redis.flushdb()
    services = Services(env, tmp_path)
    services.start("ingest", "archiver", "counter", "gateway")
    started = datetime.now(UTC) - timedelta(seconds=1)
    ours = generate(1500, seed=61)
    originals = [
        {"texto": f"Granizo {i}", "pais": "Guatemala" if i % 2 else "Argentina"} for i in range(40)
    ]
    junk = [b"not json", b"[1, 2]", b'{"texto": "", "pais": "Chile"}']
    try:
        with httpx.Client(base_url=services.url("gateway"), timeout=30) as http:
            for start in range(0, 1500, 500):
                answer = http.post("/api/v1/tweets", json=ours[start : start + 500])
                assert answer.status_code == 202, answer.text
        values = [json.dumps(r, ensure_ascii=False).encode() for r in originals]
        _produce_like_the_original(env["WT_BROKER_URL"], env["WT_TOPIC"], values + junk)
        countries = namespace.wait_exact(1540)
        expected = Counter(r["pais"] for r in ours + originals)
        assert countries == dict(expected)

        hashes = _seed_hash_totals(redis, list(expected))
        assert hashes == dict(expected)  # `HGETALL <pais>`: the original's panels' numbers
        gateway = httpx.get(services.url("gateway") + "/api/v1/countries/Guatemala").json()
        assert sum(int(n) for n in _hvals(redis, "Guatemala")) == gateway["total"]
        assert redis.hget("Guatemala", "Granizo 1") == "1"
        _run_the_original_dashboards_queries(redis, [p for p in expected if p in _offered()])

        skipped = httpx.get(services.url("archiver") + "/metrics").text
        assert 'weathertweets_records_skipped_total{group="archiver"} 3.0' in skipped
        _check_archive(namespace, env, started, originals)

        services.stop("archiver", "counter")  # then reprocess everything from the first record
        _rewind(env["WT_BROKER_URL"], env["WT_TOPIC"], ["archiver", "counter"])
        services.start("archiver", "counter")
        _wait_caught_up(services)
        assert namespace.wait_exact(1540) == dict(expected)
        assert _seed_hash_totals(redis, list(expected)) == dict(expected)
    finally:
        services.stop()
        redis.close()


def _offered() -> list[str]:
    board = json.loads((DASHBOARDS / "original.json").read_text())
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "pais"]
    return str(variable["query"]).split(",")


def _run_the_original_dashboards_queries(redis: Redis, countries: list[str]) -> None:
    found = list(queries(DASHBOARDS / "original.json"))
    assert found and all(isinstance(q, RedisQuery) for q in found)
    assert countries
    for query in found:
        assert isinstance(query, RedisQuery)
        assert query.args == ("HGETALL", "$pais"), query  # the original's own command
        for pais in countries:
            answer = redis.hgetall(pais)
            assert answer, f"{query.where}: HGETALL {pais} returned nothing"


def _check_archive(
    namespace: RealNamespace,
    env: dict[str, str],
    started: datetime,
    originals: list[dict[str, str]],
) -> None:
    client: MongoClient[dict[str, Any]]
    with MongoClient(env["WT_STORE_URL"], serverSelectionTimeoutMS=5000, tz_aware=True) as client:
        register: Collection[dict[str, Any]] = client[f"wt_e2e_{namespace.tag}"]["register"]
        assert register.count_documents({"timestamp": {"$gte": started}}) == 1540
        for document in register.find({}):
            for name in ("timestamp", "received_at", "archived_at"):
                assert isinstance(document[name], datetime), (name, document)  # BSON dates
            assert document["timestamp"] == document["received_at"]
        theirs = list(register.find({"texto": {"$regex": "^Granizo [0-9]+$"}}))
        assert sorted(d["texto"] for d in theirs) == sorted(r["texto"] for r in originals)
        assert all(len(d["_id"]) == 26 for d in theirs)  # derived from the record's position


def _wait_caught_up(services: Services, timeout: float = 60) -> None:
    """Both consumers have read to the end again (their lag gauge is 0 after a real poll)."""
    deadline = time.monotonic() + timeout
    for name in ("archiver", "counter"):
        while True:
            metrics = httpx.get(services.url(name) + "/metrics").text
            line = f'weathertweets_records_processed_total{{group="{name}"}} 1540.0'
            if line in metrics:
                break
            assert time.monotonic() < deadline, metrics[-2000:]
            time.sleep(0.5)


def test_the_originals_set_is_served_by_the_gateway(pipeline: Pipeline) -> None:
    """`POST /set` (the original's Rust API) works through the gateway, in every mode."""
    pipeline.start()
    answer = httpx.post(pipeline.url + "/set", json={"Pais": "Guatemala", "Texto": "Lluvia"})
    assert (answer.status_code, answer.text) == (200, "Data set")
    country = httpx.get(pipeline.url + "/api/v1/countries/Guatemala").json()
    assert country == {"pais": "Guatemala", "total": 1, "texts": [{"texto": "Lluvia", "count": 1}]}


async def test_the_originals_hashes_never_touch_our_keys_or_another_type() -> None:
    """A country whose bare key is one of ours, or a key of another type, gets no seed hash,
    and the batch is still counted whole (a half-failed Lua script would not roll back)."""
    from weathertweets.backends.redis_counters import RedisCounters
    from weathertweets.ports import CountedTweet

    namespace = RealNamespace.fresh()
    prefix = namespace.env["WT_COUNTER_PREFIX"]
    url = urlunsplit(urlsplit(namespace.env["WT_COUNTER_URL"])._replace(path="/10"))
    taken = f"taken-{namespace.tag}"
    with Redis.from_url(url, decode_responses=True) as redis:
        redis.set(taken, "a string, not a hash")
    counters = RedisCounters(url, prefix)
    await counters.start()
    try:
        batch = [
            CountedTweet(0, 0, f"{prefix}total", "Sol"),
            CountedTweet(0, 1, taken, "Sol"),
            CountedTweet(0, 2, f"ok-{namespace.tag}", "Sol"),
        ]
        assert await counters.apply("counter", batch) == 3
        assert await counters.apply("counter", batch) == 0  # a replay
        stats = await counters.stats()
    finally:
        await counters.close()
    assert stats.total == 3 and sum(stats.countries.values()) == 3
    with Redis.from_url(url, decode_responses=True) as redis:
        assert redis.get(taken) == "a string, not a hash"
        assert redis.hgetall(f"ok-{namespace.tag}") == {"Sol": "1"}
        assert redis.get(f"{prefix}total") == "3"
        redis.delete(taken, f"ok-{namespace.tag}")
