"""The consumer loop shared by the archiver and the counter.

Poll a batch, hand it to the sink until the sink has it, then commit: a crash anywhere replays
the batch, and the sinks make a replay harmless (idempotent archive, offset-checked counters).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import msgspec

from weathertweets.domain import InvalidTweet, Tweet, decode_any_record
from weathertweets.metrics import BATCH_SIZE, E2E_LATENCY, LAG, POISON, PROCESSED
from weathertweets.ports import Consumer, Message

log = logging.getLogger("weathertweets.consumer")

Sink = Callable[[list[tuple[Message, Tweet]]], Awaitable[None]]


def decode_batch(group: str, messages: Sequence[Message]) -> list[tuple[Message, Tweet]]:
    decoded = []
    for message in messages:
        try:
            tweet = decode_any_record(message.value, message.position, message.timestamp_ms)
            decoded.append((message, tweet))
        except (msgspec.DecodeError, InvalidTweet, UnicodeDecodeError) as error:
            POISON.labels(group).inc()
            log.error(
                "%s: skipping record %d/%d: %s", group, message.partition, message.offset, error
            )
    return decoded


async def _retry(what: str, action: Callable[[], Awaitable[None]], stopping: asyncio.Event) -> bool:
    """Run `action` until it succeeds (True) or a stop is requested while it keeps failing."""
    delay = 0.1
    while True:
        try:
            await action()
            return True
        except Exception as error:
            log.warning("%s failed (%s); retrying in %.1fs", what, error, delay)
        if stopping.is_set():
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def consume(
    group: str,
    consumer: Consumer,
    sink: Sink,
    stopping: asyncio.Event,
    *,
    max_records: int = 5000,
    drain_timeout: float = 10.0,
) -> None:
    """Run until `stopping` is set, then keep going while records come, for `drain_timeout`."""
    drain_deadline: float | None = None
    next_lag_check = 0.0
    while True:
        if stopping.is_set() and drain_deadline is None:
            drain_deadline = time.monotonic() + drain_timeout
        if drain_deadline is not None and time.monotonic() > drain_deadline:
            return
        try:
            messages = await consumer.poll(max_records, timeout=0.25)
        except Exception as error:
            log.warning("%s: poll failed (%s)", group, error)
            await asyncio.sleep(0.5)
            continue
        if messages:
            batch = decode_batch(group, messages)
            if not await _retry(f"{group} sink", partial(sink, batch), stopping):
                return  # not committed: these records come back on the next start
            if not await _retry(f"{group} commit", partial(consumer.commit, messages), stopping):
                return
            _observe(group, batch)
        elif drain_deadline is not None:
            return  # stopping and nothing left
        if time.monotonic() >= next_lag_check:
            next_lag_check = time.monotonic() + 1.0
            try:
                LAG.labels(group).set(await consumer.lag())
            except Exception as error:
                log.debug("%s: lag unknown (%s)", group, error)


def _observe(group: str, batch: list[tuple[Message, Tweet]]) -> None:
    PROCESSED.labels(group).inc(len(batch))
    BATCH_SIZE.labels(group).observe(len(batch))
    now = time.time()
    latency = E2E_LATENCY.labels(group)
    for _, tweet in batch:
        latency.observe(max(0.0, now - tweet.received_at.timestamp()))
