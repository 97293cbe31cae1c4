"""Apache Kafka broker via confluent-kafka (librdkafka), bridged to asyncio with threads.

`kafka://host:9092[,host2:9092][?librdkafka.option=value&...]`. The producer is idempotent with
acks=all; `publish` returns once every record of the call is acknowledged by the cluster. Each
consumer runs its (not thread-safe) librdkafka handle on one thread of its own, commits
explicitly, and starts from the earliest record when its group has no position yet.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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

from weathertweets.ports import BackendUnavailable, Message

log = logging.getLogger("weathertweets.kafka")
R = TypeVar("R")

PRODUCER_DEFAULTS = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "batch.size": 1_048_576,
    "queue.buffering.max.messages": 1_000_000,
    "delivery.timeout.ms": 30_000,
}
CONSUMER_DEFAULTS = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "fetch.wait.max.ms": 50,
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 1_000,
}
# Commit failures that mean "the partition moved to another member": the new owner replays the
# batch and the sinks absorb the replay, so these are not worth retrying.
_LOST_OWNERSHIP = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
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


class KafkaBroker:
    def __init__(self, url: str, topic: str = "messages", partitions: int = 3) -> None:
        self._config = parse_url(url)
        self.topic = topic
        self._partitions = partitions
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._closing = threading.Event()
        self._admin_thread = _Thread("kafka-admin")

    async def start(self) -> None:
        await self._admin_thread.run(self._ensure_topic)
        self._producer = Producer({**self._config, **PRODUCER_DEFAULTS})
        self._poller = threading.Thread(target=self._poll, name="kafka-producer", daemon=True)
        self._poller.start()

    def _ensure_topic(self) -> None:
        admin = AdminClient(self._config)
        try:
            existing = admin.list_topics(timeout=10).topics
        except KafkaException as error:
            raise BackendUnavailable(
                f"Kafka at {self._config['bootstrap.servers']}: {error}"
            ) from error
        if self.topic in existing:
            return
        new = NewTopic(self.topic, num_partitions=self._partitions, replication_factor=-1)
        for future in admin.create_topics([new], operation_timeout=30).values():
            try:
                future.result()
                log.info("created topic %s with %d partitions", self.topic, self._partitions)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BackendUnavailable(
                        f"cannot create topic {self.topic}: {error}"
                    ) from error

    def _poll(self) -> None:
        assert self._producer is not None
        while not self._closing.is_set():
            self._producer.poll(0.1)  # runs the delivery callbacks

    async def publish(self, values: Sequence[bytes]) -> None:
        if self._producer is None:
            raise BackendUnavailable("the Kafka producer is not started")
        if not values:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        lock = threading.Lock()
        remaining = len(values)
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

        for index, value in enumerate(values):
            if not await self._produce(value, delivered):
                account(len(values) - index, "the local producer queue stayed full")
                break
        await done

    async def _produce(self, value: bytes, delivered: Callable[[Any, Any], None]) -> bool:
        assert self._producer is not None
        for _ in range(200):  # the queue drains as the cluster acknowledges: wait up to ~2 s
            try:
                self._producer.produce(self.topic, value, on_delivery=delivered)
                return True
            except BufferError:
                await asyncio.sleep(0.01)
        return False

    def consumer(self, group: str) -> KafkaConsumer:
        return KafkaConsumer(self._config, self.topic, group)

    async def ping(self) -> None:
        producer = self._producer
        if producer is None:
            raise BackendUnavailable("the Kafka producer is not started")
        try:
            await self._admin_thread.run(lambda: producer.list_topics(self.topic, timeout=3))
        except KafkaException as error:
            raise BackendUnavailable(f"Kafka: {error}") from error

    async def close(self) -> None:
        if self._producer is not None:
            producer = self._producer
            left = await self._admin_thread.run(lambda: producer.flush(10))
            if left:
                log.error("%d records were not acknowledged by Kafka at shutdown", left)
        self._closing.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        self._admin_thread.shutdown()


class KafkaConsumer:
    def __init__(self, config: dict[str, Any], topic: str, group: str) -> None:
        self._topic = topic
        self._group = group
        self._thread = _Thread(f"kafka-{group}")
        settings = {**config, **CONSUMER_DEFAULTS, "group.id": group}
        self._consumer = RdConsumer(settings)
        self._consumer.subscribe([topic])

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        records = await self._thread.run(lambda: self._consumer.consume(max_records, timeout))
        messages = []
        for record in records:
            error = record.error()
            if error is not None:
                if error.fatal():
                    raise BackendUnavailable(f"Kafka consumer: {error}")
                log.warning("%s: %s", self._group, error)
                continue
            partition, offset, value = record.partition(), record.offset(), record.value()
            if partition is None or offset is None or value is None:
                continue  # not a data record (an empty value is never ours)
            kind, stamp = record.timestamp()
            timestamp_ms = stamp if kind != TIMESTAMP_NOT_AVAILABLE else None
            messages.append(Message(partition, offset, value, self._topic, timestamp_ms))
        return messages

    async def commit(self, messages: Sequence[Message]) -> None:
        ends: dict[int, int] = {}
        for message in messages:
            ends[message.partition] = max(ends.get(message.partition, 0), message.offset + 1)
        if not ends:
            return
        offsets = [TopicPartition(self._topic, p, end) for p, end in ends.items()]
        try:
            await self._thread.run(
                lambda: self._consumer.commit(offsets=offsets, asynchronous=False)
            )
        except KafkaException as error:
            if error.args[0].code() in _LOST_OWNERSHIP:
                log.info("%s: commit skipped after a rebalance (%s)", self._group, error)
                return
            raise BackendUnavailable(f"Kafka commit: {error}") from error

    async def lag(self) -> int:
        def measure() -> int:
            assigned = self._consumer.assignment()
            if not assigned:
                return 0
            committed = self._consumer.committed(assigned, timeout=5)
            total = 0
            for partition in committed:
                low, high = self._consumer.get_watermark_offsets(partition, timeout=5)
                position = partition.offset if partition.offset >= 0 else low
                total += max(0, high - position)
            return total

        return await self._thread.run(measure)

    async def close(self) -> None:
        await self._thread.run(self._consumer.close)
        self._thread.shutdown()
