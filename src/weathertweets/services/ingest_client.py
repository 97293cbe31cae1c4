"""The gateway's side of ingest: one gRPC channel, balanced over every ingest replica.

The target is any gRPC name: `host:port`, `dns:///ingest-headless:50051` (a headless Service:
one address per replica), or `ipv4:10.0.0.1:50051,10.0.0.2:50051`. The channel balances
round-robin over every address the name resolves to and stops using one as soon as its
connection fails, so losing a replica fails only the calls in flight on it. A replica the
network cut off fails no connection: a ping unanswered for 3 s closes it (failover in ≤ 5 s).
Concurrent tweets are sent in batches.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence

import grpc

from weathertweets.batching import Batcher
from weathertweets.domain import InvalidTweet, Tweet
from weathertweets.ports import BackendUnavailable
from weathertweets.proto import ingest_pb2, ingest_pb2_grpc
from weathertweets.rpc_codec import to_pb
from weathertweets.services.ingest import GRPC_OPTIONS
from weathertweets.services.writes import OutcomeUnknown

NO_HEADERS: Mapping[str, str] = {}
# Failures after the call left: ingest may have published the tweets.
AMBIGUOUS = {
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
CHANNEL_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.service_config", ROUND_ROBIN),
    ("grpc.keepalive_time_ms", 2_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class IngestClient:
    def __init__(
        self, target: str, *, timeout: float = 10.0, max_batch: int = 10_000, token: str = ""
    ) -> None:
        self.target = target
        self._timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._stub = ingest_pb2_grpc.TweetIngestStub(self._channel)
        self._batcher: Batcher[tuple[Tweet, Mapping[str, str]]] = Batcher(
            self._send, max_batch=max_batch, max_in_flight=8
        )

    async def publish(
        self, tweets: Sequence[Tweet], headers: Sequence[Mapping[str, str]] = ()
    ) -> None:
        """Return once ingest has every tweet on the broker; BackendUnavailable if it cannot.

        `headers[i]` travels with `tweets[i]` onto its broker record (trace context)."""
        if headers:
            await self._batcher.submit(list(zip(tweets, headers, strict=True)))
        else:
            await self._batcher.submit([(t, NO_HEADERS) for t in tweets])

    async def _send(self, items: list[tuple[Tweet, Mapping[str, str]]]) -> None:
        batch = ingest_pb2.TweetBatch(tweets=[to_pb(t, h) for t, h in items])
        try:
            await self._stub.PublishBatch(batch, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidTweet(details or "rejected by ingest") from error
            reason = f"ingest: {code.name}: {details}"
            if code in AMBIGUOUS or details.startswith("broker unavailable"):
                raise OutcomeUnknown(reason) from error  # sent: the broker may have it
            raise BackendUnavailable(reason) from error

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout=2.0)
        except TimeoutError as error:
            raise BackendUnavailable(f"ingest at {self.target} is not reachable") from error

    async def close(self) -> None:
        await self._batcher.close()
        await self._channel.close()
