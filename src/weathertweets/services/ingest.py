"""The ingest service (gRPC): validates tweets and publishes them durably to the broker.

Serves `weathertweets.v1.TweetIngest` and the seed's `confproto.getInfo/returnInfo`.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from weathertweets.collector import drop_tracebacks
from weathertweets.domain import InvalidTweet, Tweet
from weathertweets.logs import REQUEST_ID
from weathertweets.metrics import GRPC_DURATION, GRPC_HANDLED
from weathertweets.ports import Broker
from weathertweets.proto import confproto_pb2, confproto_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from weathertweets.rpc_codec import count_field, from_pb, unique_ids
from weathertweets.server import is_loopback
from weathertweets.services.publishing import BrokerPublisher
from weathertweets.services.writes import OutcomeUnknown

log = logging.getLogger("weathertweets.ingest")

MAX_MESSAGE = 16 * 1024 * 1024  # a full batch of the longest tweets fits
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]
# Clients are asked to reconnect now and then, so a gateway balancing over a headless Service
# resolves its name again and finds the ingest replicas added since it connected. The port is
# ours alone: a second ingest on it fails to start instead of sharing the traffic. The gateway
# pings every 2 s (ingest_client.py) to notice a replica cut off by the network: allowed.
SERVER_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_connection_age_ms", 120_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
    ("grpc.so_reuseport", 0),
]


def presents_token(metadata: Mapping[str, Any], token: bytes) -> bool:
    """The call carries `authorization: Bearer <token>` (compared in constant time)."""
    sent = str(metadata.get("authorization", "")).encode()
    return hmac.compare_digest(sent, b"Bearer " + token)


class IngestService(
    ingest_pb2_grpc.TweetIngestServicer,  # type: ignore[misc]  # generated, untyped
    confproto_pb2_grpc.getInfoServicer,  # type: ignore[misc]
):
    """`token`: the internal callers' shared secret (gateway → ingest). With one, TweetIngest
    needs it; without one, callers are trusted only on a loopback-bound ingest
    (`trust_unauthenticated`). The original's `returnInfo` carries no id or time: it stays open.
    """

    def __init__(
        self,
        broker: Broker,
        accept_unknown_countries: bool = False,
        *,
        token: str = "",
        trust_unauthenticated: bool = True,
    ) -> None:
        self._publisher = BrokerPublisher(broker)
        self._accept_unknown = accept_unknown_countries
        self._token = token.encode()
        self._trust_unauthenticated = trust_unauthenticated

    async def _trusted(self, context: grpc.aio.ServicerContext) -> bool:
        if not self._token:
            return self._trust_unauthenticated
        if presents_token(dict(context.invocation_metadata() or ()), self._token):
            return True
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "this service needs the internal token"
        )
        raise AssertionError("abort raises")  # pragma: no cover

    async def _publish(
        self,
        tweets: list[Tweet],
        context: grpc.aio.ServicerContext,
        headers: Sequence[Mapping[str, str]] = (),
    ) -> None:
        try:
            await self._publisher.publish(tweets, headers)
        except OutcomeUnknown as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))

    async def _validated(
        self, messages: list[ingest_pb2.Tweet], context: grpc.aio.ServicerContext, trusted: bool
    ) -> list[Tweet]:
        try:
            tweets = [
                from_pb(m, trusted=trusted, accept_unknown=self._accept_unknown) for m in messages
            ]
            unique_ids(tweets)
            return tweets
        except InvalidTweet as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{error.field}: {error}")
        raise AssertionError("abort raises")  # pragma: no cover

    async def Publish(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.Tweet, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.Ack:
        tweets = await self._validated([request], context, await self._trusted(context))
        await self._publish(tweets, context, [request.headers])
        return ingest_pb2.Ack(id=tweets[0].id)

    async def PublishBatch(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.TweetBatch, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.BatchAck:
        trusted = await self._trusted(context)
        tweets = await self._validated(list(request.tweets), context, trusted)
        await self._publish(tweets, context, [m.headers for m in request.tweets])
        return ingest_pb2.BatchAck(accepted=len(tweets), ids=[t.id for t in tweets])

    async def returnInfo(  # noqa: N802 - the seed's method name
        self, request: confproto_pb2.requestId, context: grpc.aio.ServicerContext
    ) -> confproto_pb2.replyInfo:
        message = ingest_pb2.Tweet(texto=request.texto, pais=request.pais)
        tweets = await self._validated([message], context, trusted=False)
        await self._publish(tweets, context)
        return confproto_pb2.replyInfo(info=f"Tweet recibido: {tweets[0].id}")


class _Observed(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # untyped base
    """Per-method call counts by status code and handling time (`weathertweets_grpc_server_*`);
    the caller's `x-request-id` metadata becomes the request id of our log lines. Requests are
    decoded here, after their size is checked on the raw bytes."""

    def __init__(self, max_batch: int, token: str = "") -> None:
        self._max_batch = max_batch
        self._token = token.encode()

    async def _authenticate(self, metadata: dict[str, Any], context: Any) -> None:
        """With a token, a batch is looked at only once its caller is known."""
        if self._token and not presents_token(metadata, self._token):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "this service needs the internal token"
            )

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(details.method).rsplit("/", 1)[-1]
        metadata = dict(details.invocation_metadata or ())
        inner, decode = handler.unary_unary, handler.request_deserializer
        limit = self._max_batch if method == "PublishBatch" else None

        async def observed(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            token = REQUEST_ID.set(metadata.get("x-request-id"))
            code = "OK"
            try:
                if limit is not None:
                    await self._authenticate(metadata, context)
                request = await _decoded(raw, decode, limit, context)
                return await inner(request, context)
            except Exception as error:
                found = context.code()
                if not isinstance(found, grpc.StatusCode):
                    code = "UNKNOWN"  # a failure grpc logs, with its traceback
                    raise
                code = found.name
                # An abort: grpc keeps its error in the call's state, which `context` holds.
                # Its frames (which hold `context`, and the message) go: no cycle holds those.
                drop_tracebacks(error)
                raise
            finally:
                REQUEST_ID.reset(token)
                GRPC_HANDLED.labels(method, code).inc()
                GRPC_DURATION.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=None, response_serializer=handler.response_serializer
        )


async def _decoded(
    raw: bytes, decode: Callable[[bytes], Any] | None, limit: int | None, context: Any
) -> Any:
    """The request, decoded only once it is known to be small enough: a bad or oversized
    message is INVALID_ARGUMENT with a short reason, never a Python error."""
    try:
        if limit is not None and count_field(raw, 1, stop_after=limit) > limit:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"tweets: at most {limit} in one batch"
            )
        return decode(raw) if decode is not None else raw
    except (ValueError, DecodeError) as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a valid message: {error}")


async def start_ingest_server(
    broker: Broker,
    address: str,
    accept_unknown_countries: bool = False,
    *,
    token: str = "",
    max_batch: int = 10_000,
) -> grpc.aio.Server:
    """The ingest services, plus the standard gRPC health service (`grpc.health.v1.Health`):
    SERVING for "" and both service names while the process runs."""
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[_Observed(max_batch, token)])
    local = is_loopback(address.rsplit(":", 1)[0])
    service = IngestService(
        broker, accept_unknown_countries, token=token, trust_unauthenticated=local
    )
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
