"""The consumer loop shared by the archiver and the counter.

Poll a batch, hand it to the sink until the sink has it, then commit: a crash anywhere replays
the batch, and the sinks make a replay harmless (idempotent archive, offset-checked counters).

Failure policy, by type:
- `BackendUnavailable` (a backend down or slow): back off and retry, for as long as it lasts;
- a record that is not a tweet, or that a sink refuses for good (`SinkRejected`): sent to the
  broker's dead-letter destination with the reason, counted, and the batch goes on;
- anything else is a bug: it propagates, the supervisor marks the process unready and stops it
  with a non-zero exit, where an orchestrator restarts it. Nothing is retried forever silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial

import msgspec

from weathertweets import tracing
from weathertweets.domain import InvalidTweet, Tweet, decode_any_record, decode_record
from weathertweets.metrics import (
    BATCH_SIZE,
    DEAD_LETTERS,
    DEFERRED,
    E2E_LATENCY,
    LAG,
    POISON,
    PROCESSED,
)
from weathertweets.ports import BackendUnavailable, Consumer, Message, SinkRejected
from weathertweets.services.deferral import Deferral

log = logging.getLogger("weathertweets.consumer")

Sink = Callable[[list[tuple[Message, Tweet]]], Awaitable[None]]
DeadLetter = Callable[[str, Sequence[Message], str], Awaitable[None]]


def decode_batch(
    group: str, messages: Sequence[Message], accept_unknown_countries: bool = False
) -> tuple[list[tuple[Message, Tweet]], list[tuple[Message, str]]]:
    """(tweets, records that are not tweets with the reason)."""
    decoded, poison = [], []
    for message in messages:
        try:
            try:
                tweet = decode_record(message.value)
            except msgspec.ValidationError:  # not ours; the original's? (its id needs the position)
                tweet = decode_any_record(
                    message.value,
                    message.position,
                    message.timestamp_ms,
                    accept_unknown=accept_unknown_countries,
                )
            decoded.append((message, tweet))
        except (msgspec.DecodeError, InvalidTweet, UnicodeDecodeError) as error:
            POISON.labels(group).inc()
            log.error("%s: record %s is not a tweet: %s", group, message.position, error)
            poison.append((message, f"not a tweet: {error}"))
    return decoded, poison


async def _retry(what: str, action: Callable[[], Awaitable[None]], stopping: asyncio.Event) -> bool:
    """Run `action` until it succeeds (True), retrying only while a backend is unavailable;
    False when a stop is requested while it keeps failing. Other errors propagate."""
    delay = 0.1
    while True:
        try:
            await action()
            return True
        except BackendUnavailable as error:
            log.warning("%s failed (%s); retrying in %.1fs", what, error, delay)
        if stopping.is_set():
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


@contextlib.contextmanager
def _spans(group: str, batch: list[tuple[Message, Tweet]]) -> Iterator[None]:
    """With tracing on, one span per record, child of the context its headers carry."""
    if not tracing.enabled():
        yield
        return
    with contextlib.ExitStack() as spans:
        for message, tweet in batch:
            spans.enter_context(
                tracing.span(
                    f"{group} {message.topic}",
                    group,
                    parent=message.headers,
                    kind="consumer",
                    tweet_id=tweet.id,
                    position=message.position,
                )
            )
        yield


async def _deliver(
    group: str,
    sink: Sink,
    batch: list[tuple[Message, Tweet]],
    dead_letter: DeadLetter,
    stopping: asyncio.Event,
) -> bool:
    """Hand `batch` to the sink until it has it; records it refuses for good are dead-lettered."""
    remaining = batch
    while remaining:
        try:
            with _spans(group, remaining):
                done = await _retry(f"{group} sink", partial(sink, remaining), stopping)
            return done
        except SinkRejected as rejected:
            refused = [remaining[i][0] for i in rejected.indexes]
            for message in refused:
                log.error("%s: sink refused record %s: %s", group, message.position, rejected)
            reason = f"refused by the sink: {rejected}"
            if not await _retry(
                f"{group} dead letter", partial(dead_letter, group, refused, reason), stopping
            ):
                return False
            DEAD_LETTERS.labels(group).inc(len(refused))
            gone = set(rejected.indexes)
            remaining = [item for i, item in enumerate(remaining) if i not in gone]
    return True


async def consume(
    group: str,
    consumer: Consumer,
    sink: Sink,
    stopping: asyncio.Event,
    dead_letter: DeadLetter,
    *,
    max_records: int = 5000,
    drain_timeout: float = 10.0,
    accept_unknown_countries: bool = False,
    deferral: Deferral | None = None,
) -> None:
    """Run until `stopping` is set, then keep going while records come, for `drain_timeout`.
    While `deferral` says so, take no new batch (never while draining to stop)."""
    drain_deadline: float | None = None
    next_lag_check = 0.0
    while True:
        if stopping.is_set() and drain_deadline is None:
            drain_deadline = time.monotonic() + drain_timeout
        if drain_deadline is not None and time.monotonic() > drain_deadline:
            return
        pause = deferral.pause() if deferral is not None and drain_deadline is None else 0.0
        if pause:
            DEFERRED.labels(group).inc(pause)
            await asyncio.sleep(pause)
            messages = []
        else:
            try:
                messages = await consumer.poll(max_records, timeout=0.25)
            except BackendUnavailable as error:
                log.warning("%s: poll failed (%s)", group, error)
                await asyncio.sleep(0.5)
                continue
        if messages:
            batch, poison = decode_batch(group, messages, accept_unknown_countries)
            for message, reason in poison:
                letter = partial(dead_letter, group, [message], reason)
                if not await _retry(f"{group} dead letter", letter, stopping):
                    return
                DEAD_LETTERS.labels(group).inc()
            if not await _deliver(group, sink, batch, dead_letter, stopping):
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
            except BackendUnavailable as error:
                log.debug("%s: lag unknown (%s)", group, error)


def _observe(group: str, batch: list[tuple[Message, Tweet]]) -> None:
    PROCESSED.labels(group).inc(len(batch))
    BATCH_SIZE.labels(group).observe(len(batch))
    now = time.time()
    E2E_LATENCY.observe_many(group, [now - tweet.received_at.timestamp() for _, tweet in batch])
