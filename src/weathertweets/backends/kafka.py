"""Apache Kafka broker via confluent-kafka (librdkafka), bridged to asyncio with threads.

`kafka://host:9092[,host2:9092][?librdkafka.option=value&...]`: the URL's options override the
defaults below, except those the guarantees rest on. The producer is idempotent with acks=all;
`publish` returns once every record of the call is acknowledged by the cluster; keys and
headers travel with the records. Each consumer runs its (not thread-safe) librdkafka handle
on one thread of its own and starts from the earliest record when its group has no position
yet. `commit` stores a batch's offsets once the sinks have it, and librdkafka commits what is
stored every second, at a rebalance and at close, in the background: a synchronous commit held
by a coordinator that vanished blocked the loop, which then never served the rebalance that
would have moved it to a live coordinator. A crash replays up to a second of records more; the
sinks absorb replays. Dead letters go to `<topic>.dlq` with the group, the reason and the
source position in their headers. librdkafka's logs and errors go to Python logging.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import (
    Consumer as RdConsumer,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from weathertweets.batching import Batcher
from weathertweets.ports import BackendUnavailable, Message, Record

log = logging.getLogger("weathertweets.kafka")
R = TypeVar("R")

# Every client, unless the URL says otherwise. A broker that vanishes without closing its
# connections (a host lost, a network cut) would hold a request for librdkafka's default 60 s
# (a consumer's commit, and with it the whole consume loop); 10 s, then retry elsewhere.
CLIENT_DEFAULTS = {
    "socket.timeout.ms": 10_000,
    "socket.connection.setup.timeout.ms": 10_000,
    "topic.metadata.refresh.interval.ms": 10_000,  # learn moved leaders without an error first
}
PRODUCER_DEFAULTS = {
    "compression.type": "lz4",
    # A request waits for its record's acknowledgement, so linger is latency every request pays
    # and, with a fixed number of clients, throughput: 5 ms held the edge's single tweets at
    # 8 400 requests/s at 64 connections where 1 ms does 19 400, at no more CPU a tweet and
    # the same batch throughput (0 ms costs the broker 5x the CPU a tweet).
    "linger.ms": 1,
    "batch.num.messages": 10_000,
    "batch.size": 1_048_576,
    "queue.buffering.max.messages": 1_000_000,
    "delivery.timeout.ms": 30_000,
    # A produce sent to a leader that has just vanished waits this long, then goes to the new
    # one (the idempotent producer keeps the retry exactly-once). librdkafka times requests
    # out by the socket timeout, so both are set.
    "request.timeout.ms": 5_000,
    "socket.timeout.ms": 5_000,
}
LINGER = 0.01  # seconds a consumer waits for more once a record arrived: fewer, larger sink calls
CONSUMER_DEFAULTS = {
    "auto.commit.interval.ms": 1_000,
    "fetch.wait.max.ms": 50,
    # Prefetched records held in memory (librdkafka's defaults: 64 MB, 100 000 records, fetches
    # of up to 50 MB). A counter draining a backlog peaked at 175-181 MB of RSS with 8 MB and
    # the rest default; with these, 128 MB, at 39 000 records/s instead of 42 000.
    "queued.max.messages.kbytes": 1024,
    "queued.min.messages": 10_000,
    "fetch.max.bytes": 2_097_152,
    # The brokers' minimum. A member is declared gone after it, and a group whose coordinator
    # was lost waits as long again for the old members before it assigns partitions anew.
    "session.timeout.ms": 6_000,
    "heartbeat.interval.ms": 1_000,
}
# The URL's options override the defaults above, but not these: "202 only once the cluster has
# the record", "an offset is committed only after the sinks" and "a new group misses nothing"
# rest on them.
PRODUCER_REQUIRED = {"enable.idempotence": True, "acks": "all"}
CONSUMER_REQUIRED = {
    "enable.auto.offset.store": False,  # only `commit`, after the sinks, stores an offset
    "enable.auto.commit": True,  # what `commit` stores is committed by librdkafka
    "auto.offset.reset": "earliest",  # a new group starts from the first record, not the next
}
# Commit failures that mean "the partition moved to another member": the new owner replays the
# batch and the sinks absorb the replay, so these are not worth retrying.
_LOST_OWNERSHIP = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
    KafkaError._STATE,  # storing an offset for a partition no longer assigned
}


def parse_url(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise ValueError(f"not a Kafka URL: {url!r} (expected kafka://host:9092[,host:port])")
    return {"bootstrap.servers": parts.netloc, **dict(parse_qsl(parts.query))}


class _Thread:
    """One dedicated thread: librdkafka handles that are not thread-safe stay on it."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, job: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def _client_logging(config: dict[str, Any], name: str) -> dict[str, Any]:
    """librdkafka's log lines and errors, into Python logging."""
    logger = logging.getLogger(f"weathertweets.kafka.{name}")

    def on_error(error: KafkaError) -> None:
        level = logging.ERROR if error.fatal() else logging.WARNING
        logger.log(level, "%s", error)

    return {**config, "logger": logger, "error_cb": on_error}


class KafkaBroker:
    """The producer is made on first publish, so a consuming-only service never opens one."""

    def __init__(self, url: str, topic: str = "messages", partitions: int = 3) -> None:
        self._config = parse_url(url)
        self.topic = topic
        self.dead_letter_topic = f"{topic}.dlq"
        self._partitions = partitions
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._closing = threading.Event()
        self._admin_thread = _Thread("kafka-admin")
        self._topics_made: set[str] = set()
        # Concurrent publishes leave together: one wake-up of the event loop per batch.
        self._appender: Batcher[Record] = Batcher(
            partial(self._publish, self.topic), max_batch=10_000, max_in_flight=4
        )

    async def start(self) -> None:
        self._admin = AdminClient(_client_logging({**CLIENT_DEFAULTS, **self._config}, "admin"))
        await self._admin_thread.run(lambda: self._ensure_topic(self.topic, self._partitions))

    def _ensure_topic(self, topic: str, partitions: int) -> None:
        assert self._admin is not None
        try:
            existing = self._admin.list_topics(timeout=10).topics
        except KafkaException as error:
            raise BackendUnavailable(
                f"Kafka at {self._config['bootstrap.servers']}: {error}"
            ) from error
        if topic not in existing:
            new = NewTopic(topic, num_partitions=partitions, replication_factor=-1)
            for future in self._admin.create_topics([new], operation_timeout=30).values():
                try:
                    future.result()
                    log.info("created topic %s with %d partitions", topic, partitions)
                except KafkaException as error:
                    if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise BackendUnavailable(f"cannot create topic {topic}: {error}") from error
        self._topics_made.add(topic)

    def _producing(self) -> Producer:
        if self._producer is None:
            settings = _client_logging(producer_settings(self._config), "producer")
            self._producer = Producer(settings)
            self._poller = threading.Thread(target=self._poll, name="kafka-producer", daemon=True)
            self._poller.start()
        return self._producer

    def _poll(self) -> None:
        assert self._producer is not None
        while not self._closing.is_set():
            self._producer.poll(0.1)  # runs the delivery callbacks

    async def publish(self, records: Sequence[Record]) -> None:
        await self._appender.submit(records)

    async def dead_letter(self, group: str, messages: Sequence[Message], reason: str) -> None:
        topic = self.dead_letter_topic
        if topic not in self._topics_made:
            await self._admin_thread.run(lambda: self._ensure_topic(topic, 1))
        records = [
            Record(
                m.value,
                headers=(
                    *m.headers,
                    ("wt-group", group.encode()),
                    ("wt-reason", reason.encode()),
                    ("wt-source", m.position.encode()),
                ),
            )
            for m in messages
        ]
        await self._publish(topic, records)

    async def _publish(self, topic: str, records: Sequence[Record]) -> None:
        if self._closing.is_set():
            raise BackendUnavailable("the Kafka producer is closed")
        if not records:
            return
        producer = self._producing()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        lock = threading.Lock()
        remaining = len(records)
        failures: list[str] = []

        def settle() -> None:
            if done.done():
                return
            if failures:
                done.set_exception(BackendUnavailable(f"Kafka refused records: {failures[0]}"))
            else:
                done.set_result(None)

        def account(count: int, failure: str | None) -> None:
            nonlocal remaining
            with lock:
                if failure is not None:
                    failures.append(failure)
                remaining -= count
                finished = remaining == 0
            if finished:
                loop.call_soon_threadsafe(settle)

        def delivered(error: KafkaError | None, _: object) -> None:  # on the poller thread
            account(1, None if error is None else str(error))

        for index, record in enumerate(records):
            try:
                producer.produce(
                    topic, record.value, record.key, on_delivery=delivered, headers=_headers(record)
                )
                continue
            except BufferError:
                pass
            except KafkaException as error:  # e.g. a fatal idempotence error: the rest never left
                account(len(records) - index, str(error))
                break
            if not await self._produce(producer, topic, record, delivered):
                account(len(records) - index, "the local producer queue stayed full")
                break
        await done

    @staticmethod
    async def _produce(
        producer: Producer, topic: str, record: Record, delivered: Callable[[Any, Any], None]
    ) -> bool:
        for _ in range(200):  # the queue drains as the cluster acknowledges: wait up to ~2 s
            await asyncio.sleep(0.01)
            try:
                producer.produce(
                    topic, record.value, record.key, on_delivery=delivered, headers=_headers(record)
                )
                return True
            except BufferError:
                pass
        return False

    def consumer(self, group: str) -> KafkaConsumer:
        return KafkaConsumer(_client_logging(self._config, group), self.topic, group)

    async def ping(self) -> None:
        admin = self._admin
        if admin is None:
            raise BackendUnavailable("the Kafka client is not started")
        try:
            await self._admin_thread.run(lambda: admin.list_topics(self.topic, timeout=3))
        except KafkaException as error:
            raise BackendUnavailable(f"Kafka: {error}") from error

    async def close(self) -> None:
        await self._appender.close()
        if self._producer is not None:
            producer = self._producer
            left = await self._admin_thread.run(lambda: producer.flush(10))
            if left:
                log.error("%d records were not acknowledged by Kafka at shutdown", left)
        self._closing.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        self._admin_thread.shutdown()


def _headers(record: Record) -> list[tuple[str, str | bytes | None]] | None:
    return list(record.headers) or None


def _header(pair: Any) -> tuple[str, bytes]:
    name, value = pair[0], pair[1]
    return str(name), value.encode() if isinstance(value, str) else (value or b"")


def producer_settings(config: dict[str, Any]) -> dict[str, Any]:
    return _required({**CLIENT_DEFAULTS, **PRODUCER_DEFAULTS, **config}, PRODUCER_REQUIRED)


def consumer_settings(config: dict[str, Any], group: str) -> dict[str, Any]:
    settings = _required({**CLIENT_DEFAULTS, **CONSUMER_DEFAULTS, **config}, CONSUMER_REQUIRED)
    settings["group.id"] = group
    # librdkafka refuses a consumer whose fetches are smaller than the largest record allowed.
    largest = int(config.get("message.max.bytes", 1_000_000))  # librdkafka's default
    settings["fetch.max.bytes"] = max(int(settings["fetch.max.bytes"]), largest)
    return settings


# librdkafka's other names for a required setting, and the spellings it reads as the same value.
_ALIASES = {"acks": ("request.required.acks",)}
_SAME = {
    "true": {"true", "t", "1"},
    "false": {"false", "f", "0"},
    "all": {"all", "-1"},
    "earliest": {"earliest", "smallest", "beginning"},
}


def _required(settings: dict[str, Any], required: dict[str, Any]) -> dict[str, Any]:
    settings = dict(settings)
    for name, value in required.items():
        wanted = str(value).lower()
        for key in (name, *_ALIASES.get(name, ())):
            given = settings.pop(key, value)
            if str(given).lower() not in _SAME.get(wanted, {wanted}):
                log.warning("ignoring %s=%s in the Kafka URL: it must be %s", key, given, value)
    return {**settings, **required}


class KafkaConsumer:
    def __init__(self, config: dict[str, Any], topic: str, group: str) -> None:
        self._topic = topic
        self._group = group
        self._thread = _Thread(f"kafka-{group}")
        self._consumer = RdConsumer(consumer_settings(config, group))
        self._consumer.subscribe([topic], on_assign=self._on_assign)
        # Partition → the group's committed position, asked once per assignment (others may
        # have committed meanwhile) and then kept by our own commits.
        self._committed: dict[int, int] = {}
        self._ask_committed_after = 0.0  # monotonic time; after a failed ask, wait a little

    def _on_assign(self, _: object, partitions: list[TopicPartition]) -> None:
        self._committed = {}

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        try:
            records = await self._thread.run(lambda: self._fetch(max_records, timeout))
        except KafkaException as error:
            raise BackendUnavailable(f"Kafka consumer: {error}") from error
        messages = []
        for record in records:
            problem = record.error()
            if problem is not None:
                if problem.fatal():
                    raise BackendUnavailable(f"Kafka consumer: {problem}")
                log.warning("%s: %s", self._group, problem)
                continue
            partition, offset, value = record.partition(), record.offset(), record.value()
            if partition is None or offset is None or value is None:
                continue  # not a data record (an empty value is never ours)
            kind, stamp = record.timestamp()
            timestamp_ms = stamp if kind != TIMESTAMP_NOT_AVAILABLE else None
            headers = tuple(_header(pair) for pair in record.headers() or ())
            messages.append(Message(partition, offset, value, self._topic, timestamp_ms, headers))
        return messages

    def _fetch(self, max_records: int, timeout: float) -> list[Any]:
        """What is already fetched, at once; else wait for the first record, then `LINGER` for
        those right behind it. Never for a full batch: `consume(n, t)` waits until n records or
        t seconds, a quarter second of staleness at everyday rates."""
        records = self._consumer.consume(max_records, 0)
        if not records:
            records = self._consumer.consume(1, timeout)
            if records and max_records > 1:
                try:
                    records += self._consumer.consume(max_records - 1, LINGER)
                except KafkaException as error:  # the first is fetched: hand it over, never drop it
                    log.warning("%s: %s", self._group, error)
        return list(records)

    async def commit(self, messages: Sequence[Message]) -> None:
        ends: dict[int, int] = {}
        for message in messages:
            ends[message.partition] = max(ends.get(message.partition, 0), message.offset + 1)
        if not ends:
            return
        offsets = [TopicPartition(self._topic, p, end) for p, end in ends.items()]
        try:
            await self._thread.run(lambda: self._consumer.store_offsets(offsets=offsets))
            self._committed.update(ends)
        except KafkaException as error:
            if error.args[0].code() in _LOST_OWNERSHIP:
                log.info("%s: commit skipped after a rebalance (%s)", self._group, error)
                return
            raise BackendUnavailable(f"Kafka commit: {error}") from error

    async def lag(self) -> int:
        """Records of the assigned partitions not committed (stored) yet. The newest offsets
        come from the fetches already made: a broker that stopped answering cannot stall the
        loop."""
        return await self._thread.run(self._measure_lag)

    def _measure_lag(self) -> int:
        assigned = self._consumer.assignment()
        unknown = [tp for tp in assigned if tp.partition not in self._committed]
        if unknown and time.monotonic() >= self._ask_committed_after:
            try:
                found = self._consumer.committed(unknown, timeout=2)
            except KafkaException as error:
                self._ask_committed_after = time.monotonic() + 10
                raise BackendUnavailable(f"Kafka lag: {error}") from error
            self._committed.update({tp.partition: tp.offset for tp in found})
        total = 0
        for tp in assigned:
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            position = self._committed.get(tp.partition)
            if high < 0 or position is None:
                continue  # nothing fetched from this partition yet, or its position unknown
            total += max(0, high - (position if position >= 0 else max(low, 0)))
        return total

    async def close(self) -> None:
        await self._thread.run(self._consumer.close)
        self._thread.shutdown()
