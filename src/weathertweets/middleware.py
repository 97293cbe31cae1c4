"""ASGI middleware around a Router: request ids, an access log, and per-route metrics."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import Token

from weathertweets.logs import REQUEST_ID, TWEET_ID
from weathertweets.metrics import HTTP_DURATION, HTTP_REQUESTS, CounterCell, HistogramCell
from weathertweets.web import Message, Receive, Response, Scope, Send

access = logging.getLogger("weathertweets.access")
_SAFE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Responder = Callable[[Scope, Receive], Awaitable[Response]]
ResponseHook = Callable[[Scope, int], None]


def _request_id(scope: Scope) -> bytes:
    """The caller's `x-request-id` when it is a sane token, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _SAFE_ID.fullmatch(value):
            return bytes(value)
    return b"%s%08x" % (_ID_PREFIX, next(_ID_SEQUENCE) & 0xFFFFFFFF)


# A new request id: this process's random prefix and a counter, unique without a syscall each.
_ID_PREFIX = b""
_ID_SEQUENCE = itertools.count()


def _new_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(4).hex().encode()


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


_SHED = Response(
    503,
    b'{"error":{"code":"overloaded","message":"too many requests in progress; retry soon"}}',
    headers=[(b"retry-after", b"1")],
)


async def _shed(send: Send) -> None:
    headers = [
        (b"content-type", _SHED.content_type),
        (b"content-length", str(len(_SHED.body)).encode()),
        *_SHED.headers,
    ]
    await send({"type": "http.response.start", "status": _SHED.status, "headers": headers})
    await send({"type": "http.response.body", "body": _SHED.body})


class Observed:
    """Gives each request an id (echoed as `x-request-id`), times it, counts it by route and
    status, logs one access line, and calls `on_response` hooks (the gateway counts rejections).
    Past `max_concurrent` requests in progress it sheds load: 503 with Retry-After.
    `direct_paths`: small POSTs the server may hand over whole, to `respond`
    (`server.BoundedHttpTools`), when the app has a `respond` of its own (`web.Router`)."""

    def __init__(
        self,
        app: ASGIApp,
        service: str,
        *,
        access_log: bool = True,
        on_response: ResponseHook | None = None,
        max_concurrent: int = 0,
        direct_paths: Iterable[str] = (),
    ) -> None:
        self.app, self.service = app, service
        self._respond: Responder | None = getattr(app, "respond", None)  # a `web.Router`'s
        self.direct_paths = frozenset(direct_paths) if self._respond else frozenset()
        self._access_log = access_log
        self._on_response = on_response
        self._max_concurrent = max_concurrent  # 0: no cap
        self._in_flight = 0
        self._children: dict[tuple[str, int], tuple[CounterCell, HistogramCell]] = {}

    def _series(self, route: str, status: int) -> tuple[CounterCell, HistogramCell]:
        """The metric children of a route and status (routes are the router's, a bounded set)."""
        found = self._children.get((route, status))
        if found is None:
            found = (
                HTTP_REQUESTS.labels(self.service, route, str(status)),
                HTTP_DURATION.labels(self.service, route),
            )
            self._children[(route, status)] = found
        return found

    def _overloaded(self) -> bool:
        return bool(self._max_concurrent) and self._in_flight > self._max_concurrent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        tokens = REQUEST_ID.set(request_id.decode()), TWEET_ID.set(None)
        status = 500
        started = time.perf_counter()

        counted = True

        async def send_with_id(message: Message) -> None:
            nonlocal status, counted
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message["headers"], (b"x-request-id", request_id)]
                if (b"content-type", b"text/event-stream") in message["headers"] and counted:
                    counted = False  # a live stream is capped by its feed, not by this count
                    self._in_flight -= 1
            await send(message)

        self._in_flight += 1
        try:
            if self._overloaded():
                await _shed(send_with_id)  # past the cap: refuse at once, cheaply
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if counted:
                self._in_flight -= 1
            self._finish(scope, status, started, tokens)

    async def respond(self, scope: Scope, receive: Receive) -> Response:
        """For the server's direct lane: a request that arrived whole, answered whole, with
        the same request id, load shedding, metrics and log line as `__call__`."""
        request_id = _request_id(scope)
        tokens = REQUEST_ID.set(request_id.decode()), TWEET_ID.set(None)
        status = 500
        started = time.perf_counter()
        self._in_flight += 1
        try:
            assert self._respond is not None  # no direct paths without it
            response = _SHED if self._overloaded() else await self._respond(scope, receive)
            status = response.status
            headers = [*response.headers, (b"x-request-id", request_id)]
            return Response(status, response.body, response.content_type, headers, response.stream)
        finally:
            self._in_flight -= 1
            self._finish(scope, status, started, tokens)

    def _finish(
        self,
        scope: Scope,
        status: int,
        started: float,
        tokens: tuple[Token[str | None], Token[str | None]],
    ) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route", "unmatched")
        requests, duration = self._series(route, status)
        requests.inc()
        duration.observe(elapsed)
        if self._on_response is not None:
            self._on_response(scope, status)
        if self._access_log:
            access.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                extra={"status": status, "route": route, "duration_ms": elapsed * 1000},
            )
        TWEET_ID.reset(tokens[1])
        REQUEST_ID.reset(tokens[0])
