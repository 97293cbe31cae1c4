"""The ingest service (gRPC): validates tweets and publishes them durably to the broker.

Serves `weathertweets.v1.TweetIngest` and the seed's `confproto.getInfo/returnInfo`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import grpc

from weathertweets.domain import (
    MAX_PAIS,
    MAX_TEXTO,
    InvalidTweet,
    Tweet,
    clean_text,
    encode_record,
    utcnow,
)
from weathertweets.ids import new_id
from weathertweets.metrics import BATCH_SIZE, PUBLISHED
from weathertweets.ports import BackendUnavailable, Broker
from weathertweets.proto import confproto_pb2, confproto_pb2_grpc, ingest_pb2, ingest_pb2_grpc

log = logging.getLogger("weathertweets.ingest")

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]
# Clients are asked to reconnect now and then, so a gateway balancing over a headless Service
# resolves its name again and finds the ingest replicas added since it connected.
SERVER_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.max_connection_age_ms", 120_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
]


def to_pb(tweet: Tweet) -> ingest_pb2.Tweet:
    micros = round(tweet.received_at.timestamp() * 1_000_000)
    return ingest_pb2.Tweet(texto=tweet.texto, pais=tweet.pais, id=tweet.id, received_at_us=micros)


def from_pb(message: ingest_pb2.Tweet) -> Tweet:
    """Validate a tweet that arrived over gRPC; fill in id and time when the client left them."""
    texto = clean_text(message.texto, "texto", MAX_TEXTO)
    pais = clean_text(message.pais, "pais", MAX_PAIS)
    if message.received_at_us:
        received = datetime.fromtimestamp(message.received_at_us / 1_000_000, UTC)
    else:
        received = utcnow()
    if not message.id:
        return Tweet(new_id(), texto, pais, received)
    if len(message.id) != 26 or not message.id.isalnum():
        raise InvalidTweet("'id' must be a 26-character time-ordered id", "id")
    return Tweet(message.id, texto, pais, received)


class IngestService(
    ingest_pb2_grpc.TweetIngestServicer,  # type: ignore[misc]  # generated, untyped
    confproto_pb2_grpc.getInfoServicer,  # type: ignore[misc]
):
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def _publish(self, tweets: list[Tweet], context: grpc.aio.ServicerContext) -> None:
        try:
            await self._broker.publish([encode_record(t) for t in tweets])
        except BackendUnavailable as error:
            log.warning("broker unavailable: %s", error)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"broker unavailable: {error}")
        PUBLISHED.inc(len(tweets))
        BATCH_SIZE.labels("ingest").observe(len(tweets))

    async def _validated(
        self, messages: list[ingest_pb2.Tweet], context: grpc.aio.ServicerContext
    ) -> list[Tweet]:
        try:
            return [from_pb(m) for m in messages]
        except InvalidTweet as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{error.field}: {error}")
        raise AssertionError("abort raises")  # pragma: no cover

    async def Publish(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.Tweet, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.Ack:
        tweets = await self._validated([request], context)
        await self._publish(tweets, context)
        return ingest_pb2.Ack(id=tweets[0].id)

    async def PublishBatch(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.TweetBatch, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.BatchAck:
        tweets = await self._validated(list(request.tweets), context)
        await self._publish(tweets, context)
        return ingest_pb2.BatchAck(accepted=len(tweets), ids=[t.id for t in tweets])

    async def returnInfo(  # noqa: N802 - the seed's method name
        self, request: confproto_pb2.requestId, context: grpc.aio.ServicerContext
    ) -> confproto_pb2.replyInfo:
        message = ingest_pb2.Tweet(texto=request.texto, pais=request.pais)
        tweets = await self._validated([message], context)
        await self._publish(tweets, context)
        return confproto_pb2.replyInfo(info=f"Tweet recibido: {tweets[0].id}")


async def start_ingest_server(broker: Broker, address: str) -> grpc.aio.Server:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    service = IngestService(broker)
    ingest_pb2_grpc.add_TweetIngestServicer_to_server(service, server)
    confproto_pb2_grpc.add_getInfoServicer_to_server(service, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address}: is the port in use?")
    await server.start()
    return server
