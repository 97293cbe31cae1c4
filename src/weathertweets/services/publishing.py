"""Publishing validated tweets onto the broker: ingest's last step, and the gateway's when it
shares the process with ingest or publishes by itself (no gRPC needed for either)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from weathertweets import tracing
from weathertweets.domain import Tweet, encode_record
from weathertweets.metrics import BATCH_SIZE, PUBLISHED
from weathertweets.ports import BackendUnavailable, Broker, Record
from weathertweets.services.writes import OutcomeUnknown

log = logging.getLogger("weathertweets.ingest")


def _records(tweets: list[Tweet], headers: Sequence[Mapping[str, str]]) -> list[Record]:
    """The broker records; with tracing on, each under an `ingest` span whose context its
    record's headers carry on to the consumers."""
    if not tracing.enabled():
        return [Record(encode_record(t)) for t in tweets]
    records = []
    for tweet, carried in zip(tweets, headers or [{}] * len(tweets), strict=True):
        with tracing.span("ingest publish", "ingest", parent=carried, tweet_id=tweet.id):
            outgoing = tracing.as_record_headers(tracing.current_headers())
        records.append(Record(encode_record(tweet), headers=outgoing))
    return records


class BrokerPublisher:
    """Ingest's publishing step: tweets already validated onto the broker. The gRPC service
    uses it, and so does a gateway that shares the process with ingest (no loopback hop)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._batch_size = BATCH_SIZE.labels("ingest")  # once: a lock and a lookup a call

    async def publish(
        self, tweets: Sequence[Tweet], headers: Sequence[Mapping[str, str]] = ()
    ) -> None:
        """Raises OutcomeUnknown when the broker failed: it may have taken the records."""
        try:
            await self._broker.publish(_records(list(tweets), headers))
        except BackendUnavailable as error:
            log.warning("broker unavailable: %s", error)
            raise OutcomeUnknown(f"broker unavailable: {error}") from error
        PUBLISHED.inc(len(tweets))
        self._batch_size.observe(len(tweets))

    async def ping(self) -> None:
        await self._broker.ping()
