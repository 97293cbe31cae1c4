"""The ingest service (gRPC): validates tweets and publishes them durably to the broker.

Serves `weathertweets.v1.TweetIngest` and the seed's `confproto.getInfo/returnInfo`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from weathertweets import tracing
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
from weathertweets.logs import REQUEST_ID
from weathertweets.metrics import BATCH_SIZE, GRPC_DURATION, GRPC_HANDLED, PUBLISHED
from weathertweets.ports import BackendUnavailable, Broker, Record
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


def to_pb(tweet: Tweet, headers: Mapping[str, str] | None = None) -> ingest_pb2.Tweet:
    micros = round(tweet.received_at.timestamp() * 1_000_000)
    return ingest_pb2.Tweet(
        texto=tweet.texto, pais=tweet.pais, id=tweet.id, received_at_us=micros, headers=headers
    )


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


class IngestService(
    ingest_pb2_grpc.TweetIngestServicer,  # type: ignore[misc]  # generated, untyped
    confproto_pb2_grpc.getInfoServicer,  # type: ignore[misc]
):
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def _publish(
        self,
        tweets: list[Tweet],
        context: grpc.aio.ServicerContext,
        headers: Sequence[Mapping[str, str]] = (),
    ) -> None:
        try:
            await self._broker.publish(_records(tweets, headers))
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
        await self._publish(tweets, context, [request.headers])
        return ingest_pb2.Ack(id=tweets[0].id)

    async def PublishBatch(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.TweetBatch, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.BatchAck:
        tweets = await self._validated(list(request.tweets), context)
        await self._publish(tweets, context, [m.headers for m in request.tweets])
        return ingest_pb2.BatchAck(accepted=len(tweets), ids=[t.id for t in tweets])

    async def returnInfo(  # noqa: N802 - the seed's method name
        self, request: confproto_pb2.requestId, context: grpc.aio.ServicerContext
    ) -> confproto_pb2.replyInfo:
        message = ingest_pb2.Tweet(texto=request.texto, pais=request.pais)
        tweets = await self._validated([message], context)
        await self._publish(tweets, context)
        return confproto_pb2.replyInfo(info=f"Tweet recibido: {tweets[0].id}")


class _Observed(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # untyped base
    """Per-method call counts by status code and handling time (`weathertweets_grpc_server_*`);
    the caller's `x-request-id` metadata becomes the request id of our log lines."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(details.method).rsplit("/", 1)[-1]
        metadata = dict(details.invocation_metadata or ())
        inner = handler.unary_unary

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            token = REQUEST_ID.set(metadata.get("x-request-id"))
            code = "OK"
            try:
                return await inner(request, context)
            except Exception:
                found = context.code()
                code = found.name if isinstance(found, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                REQUEST_ID.reset(token)
                GRPC_HANDLED.labels(method, code).inc()
                GRPC_DURATION.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def start_ingest_server(broker: Broker, address: str) -> grpc.aio.Server:
    """The ingest services, plus the standard gRPC health service (`grpc.health.v1.Health`):
    SERVING for "" and both service names while the process runs."""
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[_Observed()])
    service = IngestService(broker)
    ingest_pb2_grpc.add_TweetIngestServicer_to_server(service, server)
    confproto_pb2_grpc.add_getInfoServicer_to_server(service, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", "weathertweets.v1.TweetIngest", "confproto.getInfo"):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address}: is the port in use?")
    await server.start()
    return server
