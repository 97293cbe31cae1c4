"""The whole system spread over test hosts (tests/netsim.py), a retrying client, and the books.

Hosts: three Kafka nodes (KRaft, replication 3, min.insync.replicas 2), Redis, the MongoDB-wire
server, two ingests, a gateway balancing over them, two archivers and two counters (one
consumer group each). The engines start once; each scenario starts the services afresh on a
topic, a collection and a Redis prefix of its own, so no scenario's books mix with another's.

The client posts batches with an Idempotency-Key and retries every 408, 429, 5xx and dropped
connection with the same key, as the API asks. Every text is unique, so the archive and the
counters can be checked tweet by tweet against what the gateway acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient
from redis import Redis

from tests.conftest import ROOT
from tests.netsim import Network
from weathertweets.gendata import COUNTRIES

ENGINES = ROOT / ".cache" / "engines"
HOSTS = {
    "client": 1, "k1": 11, "k2": 12, "k3": 13, "redis": 20, "mongo": 21,
    "ing1": 31, "ing2": 32, "gw": 40, "arc1": 51, "arc2": 52, "cnt1": 61, "cnt2": 62,
}  # fmt: skip
SERVICES = {  # host → (service, HTTP port for /readyz)
    "ing1": ("ingest", 8002), "ing2": ("ingest", 8002), "arc1": ("archiver", 8001),
    "arc2": ("archiver", 8001), "cnt1": ("counter", 8000), "cnt2": ("counter", 8000),
    "gw": ("gateway", 8080),
}  # fmt: skip
KAFKA_NODES = ("k1", "k2", "k3")
API_KEY = "distributed-test-key"
RETRIED = {408, 429, 500, 502, 503, 504}


def _port_open(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


def _wait(what: str, ready: Callable[[], bool], seconds: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"{what} not ready after {seconds:.0f}s\n{tail}")
        time.sleep(0.2)


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.net = Network(folder)
        for host, number in HOSTS.items():
            self.net.add(host, number, own_namespace=host != "client")
        self.address = self.net.addresses
        self.cluster_id = secrets.token_urlsafe(16)[:22]
        self.token = secrets.token_urlsafe(24)
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.tag = ""

    # --- engines ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.address[k]}:9092" for k in KAFKA_NODES)

    def start_kafka(self, node: str) -> subprocess.Popen[bytes]:
        number = KAFKA_NODES.index(node) + 1
        voters = ",".join(f"{i + 1}@{self.address[k]}:9093" for i, k in enumerate(KAFKA_NODES))
        script = str(ROOT / "tools" / "engines" / "kafka-node.sh")
        command = [script, str(self.folder / node), str(number), self.address[node], "9092"]
        env = {**os.environ, "KAFKA_HEAP": "384m"}
        log = self.folder / node / "kafka.log"
        return self.net.run(node, [*command, "9093", voters, self.cluster_id], log, env)

    def wait_kafka(self, node: str, seconds: float = 120) -> None:
        log = self.folder / node / "kafka.log"
        _wait(f"Kafka on {node}", lambda: _port_open(self.address[node], 9092), seconds, log)

    def start_engines(self) -> None:
        for node in KAFKA_NODES:
            self.start_kafka(node)
        redis_dir = self.folder / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self.net.run(
            "redis",
            [
                "redis-server", "--bind", self.address["redis"], "--port", "6379",
                "--dir", str(redis_dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--protected-mode", "no", "--daemonize", "no",
            ],
            redis_dir / "redis.log",
        )  # fmt: skip
        mongo_dir = self.folder / "mongo"
        self.net.run(
            "mongo",
            [
                str(ENGINES / "bin" / "ferretdb-embedded"),
                "-listen", f"{self.address['mongo']}:27017", "-dir", str(mongo_dir / "data"),
            ],
            mongo_dir / "ferretdb.log",
        )  # fmt: skip
        _wait("Redis", lambda: _port_open(self.address["redis"], 6379), 30, redis_dir / "redis.log")
        _wait("FerretDB", lambda: _port_open(self.address["mongo"], 27017), 30)
        for node in KAFKA_NODES:
            self.wait_kafka(node)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        _wait("three Kafka brokers", lambda: len(admin.list_topics(timeout=5).brokers) == 3, 60)

    def coordinator(self, group: str) -> str:
        """The Kafka node coordinating consumer group `group`."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        description = admin.describe_consumer_groups([group])[group].result(timeout=10)
        return KAFKA_NODES[int(description.coordinator.id) - 1]

    def restart_broker(self, node: str) -> None:
        """Power back on: the host answers again, and its Kafka starts on the same data."""
        self.net.revive(node)
        self.start_kafka(node)

    def restart_dead_brokers(self) -> None:
        """A scenario that failed half-way may have left a broker down: the next needs three."""
        dead = [node for node in KAFKA_NODES if not _port_open(self.address[node], 9092)]
        for node in dead:
            self.restart_broker(node)
        for node in dead:
            self.wait_kafka(node)

    def in_sync_replicas(self, topic: str) -> list[int]:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
        return [len(p.isrs) for p in partitions]

    # --- services --------------------------------------------------------------------------

    def environment(self, host: str) -> dict[str, str]:
        ingests = ",".join(f"{self.address[h]}:50051" for h in ("ing1", "ing2"))
        settings = {
            "WT_HOST": self.address[host],
            "WT_DATA_DIR": str(self.folder / self.tag / host),
            "WT_BROKER_URL": f"kafka://{self.bootstrap}",
            "WT_STORE_URL": f"mongodb://{self.address['mongo']}:27017/distributed",
            "WT_COUNTER_URL": f"redis://{self.address['redis']}:6379/0",
            "WT_TOPIC": self.tag,
            "WT_PARTITIONS": "6",
            "WT_STORE_COLLECTION": self.tag,
            "WT_COUNTER_PREFIX": f"{self.tag}:",
            "WT_API_KEYS": API_KEY,
            "WT_INTERNAL_TOKEN": self.token,
            "WT_INGEST_TARGET": f"ipv4:{ingests}",
        }
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("WT_")}
        return {**inherited, **settings, "PYTHONUNBUFFERED": "1"}

    def start_service(self, host: str) -> None:
        service = SERVICES[host][0]
        command = [sys.executable, "-m", "weathertweets.cli", "serve", service]
        log = self.folder / self.tag / f"{host}.log"
        self.services[host] = self.net.run(host, command, log, self.environment(host))

    def ready(self, host: str) -> bool:
        url = f"http://{self.address[host]}:{SERVICES[host][1]}/readyz"
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=2).status_code == 200
        return False

    def start_services(self, tag: str) -> None:
        """Every service on its host, on fresh names: ingests and sinks first, then the gateway."""
        self.tag = tag
        for host in SERVICES:
            self.start_service(host)
        for host in SERVICES:
            self.wait_ready(host)

    def wait_ready(self, host: str, seconds: float = 90) -> None:
        log = self.folder / self.tag / f"{host}.log"
        _wait(f"{host} ({SERVICES[host][0]})", lambda: self.ready(host), seconds, log)

    def stop_services(self) -> None:
        for process in self.services.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
        for process in self.services.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 9)
                process.wait()
        self.services.clear()

    def close(self) -> None:
        self.stop_services()
        self.net.close()

    # --- the books -------------------------------------------------------------------------

    def _mongo(self) -> MongoClient[dict[str, Any]]:
        url = f"mongodb://{self.address['mongo']}:27017"
        return MongoClient(url, directConnection=True, serverSelectionTimeoutMS=5000)

    def archived(self) -> list[tuple[str, str]]:
        with self._mongo() as mongo:
            documents = mongo["distributed"][self.tag].find({}, {"texto": 1, "pais": 1, "_id": 0})
            return [(d["texto"], d["pais"]) for d in documents]

    def archived_count(self) -> int:
        with self._mongo() as mongo:
            return int(mongo["distributed"][self.tag].count_documents({}))

    def counted(self) -> tuple[int, dict[str, int], int]:
        """(total, per country, tweet ids marked counted)."""
        with Redis(host=self.address["redis"], port=6379, decode_responses=True) as redis:
            total = int(redis.get(f"{self.tag}:total") or 0)
            countries = {k: int(v) for k, v in redis.hgetall(f"{self.tag}:countries").items()}
            seen = len(set(redis.scan_iter(f"{self.tag}:seen:*", count=1000)))  # SCAN may repeat
        return total, countries, seen

    def topic_records(self) -> int:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "books"})
        try:
            metadata = consumer.list_topics(self.tag, timeout=10).topics[self.tag]
            total = 0
            for partition in metadata.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.tag, partition), timeout=10
                )
                total += high - low
            return total
        finally:
            consumer.close()


# --- the client ----------------------------------------------------------------------------


@dataclass
class Request:
    index: int
    texts: list[tuple[str, str]]
    started: float = 0.0
    acknowledged: float | None = None
    attempts: list[tuple[float, float, str]] = field(default_factory=list)  # start, end, outcome

    @property
    def first_try_ok(self) -> bool:
        return len(self.attempts) == 1 and self.attempts[0][2] == "202"


@dataclass
class Load:
    started: float
    requests: list[Request]
    samples: list[tuple[float, int, int]]  # time, archived, counted
    events: dict[str, float]  # name → seconds after the start

    @property
    def acknowledged(self) -> list[tuple[str, str]]:
        return [t for r in self.requests if r.acknowledged is not None for t in r.texts]

    def acknowledged_by(self, moment: float) -> int:
        return sum(
            len(r.texts)
            for r in self.requests
            if r.acknowledged is not None and r.acknowledged <= moment
        )

    def _window(self, event: str, until: str | None) -> tuple[float, float]:
        start = self.started + self.events[event]
        return start, self.started + self.events[until] if until else float("inf")

    def back_in_step(self, event: str, allowance: int, until: str | None = None) -> float | None:
        """Seconds from `event` to the first sample from which on the sinks were never more
        than `allowance` tweets behind what the gateway had acknowledged (looking no further
        than event `until`); None if they were still behind at the end."""
        start, end = self._window(event, until)
        window = [(at, a, c) for at, a, c in self.samples if start <= at < end]
        behind = [
            i
            for i, (at, a, c) in enumerate(window)
            if self.acknowledged_by(at) - min(a, c) > allowance
        ]
        settled_from = behind[-1] + 1 if behind else 0
        if settled_from >= len(window):
            return None
        return window[settled_from][0] - start

    def longest_stall(self, event: str, until: str | None = None) -> float:
        """The longest time after `event` (and before `until`) that a sink was behind the
        gateway's acknowledgements and made no progress."""
        start, end = self._window(event, until)
        window = [(at, a, c) for at, a, c in self.samples if start <= at < end]
        longest = 0.0
        for sink in (1, 2):
            since: float | None = None
            for previous, current in itertools.pairwise(window):
                stuck = current[sink] == previous[sink]
                if stuck and self.acknowledged_by(current[0]) > current[sink]:
                    since = previous[0] if since is None else since
                    longest = max(longest, current[0] - since)
                else:
                    since = None
        return longest

    def settled(self, event: str, until: str | None = None, slow: float = 2.0) -> float:
        """Seconds from `event` until every request started afterwards (and before `until`)
        succeeded at its first try within `slow` seconds."""
        start, end = self._window(event, until)
        after = [r for r in self.requests if start <= r.started < end]
        troubled = [
            r.started
            for r in after
            if not r.first_try_ok or r.attempts[0][1] - r.attempts[0][0] > slow
        ]
        return max(troubled) - start if troubled else 0.0

    def timeline(self) -> list[tuple[float, int, int, int]]:
        """(seconds from the start, acknowledged, archived, counted), about once a second."""
        rows, last = [], -1.0
        for at, archived, counted in self.samples:
            if at - self.started >= last + 1:
                last = at - self.started
                rows.append((round(last, 1), self.acknowledged_by(at), archived, counted))
        return rows


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


async def _post(
    client: httpx.AsyncClient, url: str, tag: str, request: Request, give_up: float
) -> None:
    body = [{"texto": texto, "pais": pais} for texto, pais in request.texts]
    headers = {"authorization": f"Bearer {API_KEY}", "idempotency-key": f"{tag}-{request.index}"}
    request.started = time.monotonic()
    while time.monotonic() < request.started + give_up:
        begun = time.monotonic()
        pause = 0.5
        try:
            response = await client.post(url, json=body, headers=headers)
            outcome = str(response.status_code)
            if response.status_code == 202:
                request.attempts.append((begun, time.monotonic(), outcome))
                request.acknowledged = time.monotonic()
                return
            if response.status_code not in RETRIED:
                request.attempts.append((begun, time.monotonic(), outcome))
                raise AssertionError(f"refused for good: {response.status_code} {response.text}")
            pause = min(2.0, float(response.headers.get("retry-after", "0.5")))
        except httpx.TransportError as error:
            outcome = type(error).__name__
        request.attempts.append((begun, time.monotonic(), outcome))
        await asyncio.sleep(pause)


async def drive(
    cluster: Cluster,
    *,
    seconds: float,
    rate: float,
    batch: int = 10,
    concurrency: int = 64,
    events: Sequence[tuple[float, str, Callable[[], object]]] = (),
    give_up: float = 120.0,
    tail: float = 60.0,
) -> Load:
    """Post `rate` batches a second for `seconds`, running each event at its second; sample
    the sinks twice a second until every request has finished and then until the sinks hold
    every acknowledged tweet (at most `tail` seconds more)."""
    tag, url = cluster.tag, f"http://{cluster.address['gw']}:8080/api/v1/tweets"
    count = int(seconds * rate)
    requests = [
        Request(
            i,
            [(f"{tag}-{i:06d}-{j}", COUNTRIES[(i + j) % len(COUNTRIES)][0]) for j in range(batch)],
        )
        for i in range(count)
    ]
    samples: list[tuple[float, int, int]] = []
    happened: dict[str, float] = {}
    started = ended = time.monotonic()
    finished = asyncio.Event()

    async def sample() -> None:
        while True:
            with contextlib.suppress(Exception):  # an engine cut off or restarting: next time
                archived = await asyncio.to_thread(cluster.archived_count)
                counted = (await asyncio.to_thread(cluster.counted))[0]
                samples.append((time.monotonic(), archived, counted))
            if finished.is_set():
                acknowledged = sum(len(r.texts) for r in requests if r.acknowledged is not None)
                caught_up = samples and min(samples[-1][1:]) >= acknowledged
                if caught_up or time.monotonic() > ended + tail:
                    return
            await asyncio.sleep(0.5)

    async def happen() -> None:
        for at, name, action in sorted(events, key=lambda event: event[0]):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            happened[name] = time.monotonic() - started
            await asyncio.to_thread(action)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=20.0) as client:

        async def one(request: Request) -> None:
            await asyncio.sleep(max(0.0, started + request.index / rate - time.monotonic()))
            async with gate:
                await _post(client, url, tag, request, give_up)

        sampler = asyncio.create_task(sample())
        faults = asyncio.create_task(happen())
        await asyncio.gather(*(one(r) for r in requests))
        await faults
        ended = time.monotonic()
        finished.set()
        await sampler
    return Load(started, requests, samples, happened)


# --- the verdict ---------------------------------------------------------------------------


@dataclass
class Books:
    acknowledged: int
    archived: int  # distinct tweets in the archive
    counted: int  # the counters' total
    lost: int  # acknowledged, not archived
    archived_twice: int
    counted_twice: int  # counted beyond the archive
    not_counted: int  # archived, not counted
    countries_off: int  # per-country counts that differ from the archive's
    marked: int  # tweet ids the counters marked as counted
    republished: int  # records on the topic beyond one per tweet: retries the sinks absorbed
    unknown: int  # archived texts nobody sent


def settle_books(cluster: Cluster, load: Load, seconds: float = 120) -> Books:
    """Wait until the sinks agree and hold every acknowledged tweet (or time runs out), then
    compare them tweet by tweet with what was sent and acknowledged."""
    acknowledged = set(load.acknowledged)
    sent = {t for r in load.requests for t in r.texts}
    deadline = time.monotonic() + seconds
    previous: Any = None
    while True:
        archived = cluster.archived()
        total, countries, marked = cluster.counted()
        current = (len(archived), total, marked)
        complete = acknowledged <= set(archived) and len(archived) == total == marked
        if (complete and current == previous) or time.monotonic() > deadline:
            break
        previous = current
        time.sleep(2)
    distinct = set(archived)
    by_country = Counter(pais for _, pais in distinct)
    every_country = set(by_country) | set(countries)
    return Books(
        acknowledged=len(acknowledged),
        archived=len(distinct),
        counted=total,
        lost=len(acknowledged - distinct),
        archived_twice=len(archived) - len(distinct),
        counted_twice=max(0, total - len(distinct)),
        not_counted=max(0, len(distinct) - total),
        countries_off=sum(abs(countries.get(p, 0) - by_country[p]) for p in every_country),
        marked=marked,
        republished=cluster.topic_records() - len(distinct),
        unknown=len(distinct - sent),
    )
