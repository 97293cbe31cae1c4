"""A small ASGI toolkit for the hot path: exact-match routing, bounded bodies, JSON errors.

The POST path pays for no framework: one dict lookup to route, one msgspec call to decode.
The toolkit knows nothing of the application: exceptions become responses through a registry
keyed by exception class (`Router(..., errors={...})`), and metrics and logs wrap it as
middleware (`weathertweets.middleware`), reading the route template it leaves in the scope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec

from weathertweets.collector import drop_tracebacks

log = logging.getLogger("weathertweets.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_json = msgspec.json.Encoder()
JSON_TYPE = b"application/json"
BODY_TIMEOUT = 15.0
DIRECT_BODY = "weathertweets.body"  # scope extension: the whole body, read by the server


class HTTPError(Exception):
    """Turned into `{"error": {"code", "message", "field"}}` with the given status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = list(headers)

    def response(self) -> Response:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return Response.json({"error": error}, self.status, self.headers)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON_TYPE
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = (
        None  # sent after `body`, until it ends or the client goes
    )

    @classmethod
    def json(
        cls, payload: object, status: int = 200, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> Response:
        return cls(status, _json.encode(payload), JSON_TYPE, list(headers))


class Request:
    __slots__ = ("_query", "path", "path_params", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, path: str) -> None:
        self.scope = scope
        self.receive = receive
        self.path = path
        self.path_params: dict[str, str] = {}
        self._query: dict[str, list[str]] | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value)
        return None

    def media_type(self) -> str:
        raw = self.header(b"content-type")
        return raw.split(b";", 1)[0].strip().lower().decode("latin-1") if raw else ""

    def query(self, name: str) -> str | None:
        if self._query is None:
            self._query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = self._query.get(name)
        return values[-1] if values else None

    async def body(self, limit: int, timeout: float = BODY_TIMEOUT) -> bytes:
        """The whole body; 413 as soon as it grows past `limit` bytes, 408 (and the connection
        closed) when it has not all arrived within `timeout` seconds."""
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        extensions = self.scope.get("extensions")
        if extensions and DIRECT_BODY in extensions:
            body: bytes = extensions[DIRECT_BODY]
            if len(body) > limit:
                raise too_large(limit)
            return body
        try:
            async with asyncio.timeout(timeout):
                return await self._read(limit)
        except TimeoutError:
            raise HTTPError(
                408,
                "timeout",
                f"the body did not arrive within {timeout:g} s",
                headers=[(b"connection", b"close")],
            ) from None

    async def _read(self, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "disconnected", "the client went away mid-request")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def too_large(limit: int) -> HTTPError:
    return HTTPError(413, "too_large", f"the body is larger than {limit} bytes")


Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Any], Response]


class Router:
    """Exact routes `(method, path)` plus prefix routes whose rest of path is one parameter.

    `errors` maps exception classes to the response they become (the nearest class in the
    exception's MRO wins); HTTPError needs no entry, anything unmapped is a logged 500.
    """

    def __init__(
        self, service: str, errors: Mapping[type[Exception], ErrorHandler] | None = None
    ) -> None:
        self.service = service
        self._exact: dict[tuple[str, str], Handler] = {}
        self._prefixed: list[tuple[str, str, str, Handler]] = []
        self._errors: dict[type[Exception], ErrorHandler] = dict(errors or {})

    def on_error(self, kind: type[Exception], handler: ErrorHandler) -> None:
        self._errors[kind] = handler

    def _error_response(self, error: Exception, request: Request) -> Response:
        if isinstance(error, HTTPError):
            return error.response()
        for kind in type(error).__mro__:
            handler = self._errors.get(kind)
            if handler is not None:
                return handler(error)
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
        return HTTPError(500, "internal", "internal error; see the server log").response()

    def add(self, method: str, path: str, handler: Handler) -> None:
        if path.endswith("}"):
            prefix, _, name = path[:-1].rpartition("{")
            self._prefixed.append((method, prefix, name, handler))
        else:
            self._exact[(method, path)] = handler

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler); a prefix route's path ends in its `{parameter}`."""
        exact = [(method, path, handler) for (method, path), handler in self._exact.items()]
        prefixed = [(m, prefix + "{" + name + "}", h) for m, prefix, name, h in self._prefixed]
        return exact + prefixed

    def error_response(self, error: Exception, request: Request) -> Response:
        return self._error_response(error, request)

    def paths(self) -> set[str]:
        return {path for _, path in self._exact} | {p for _, p, _, _ in self._prefixed}

    def _match(self, request: Request) -> tuple[str, Handler]:
        method, path = request.method, request.path
        handler = self._exact.get((method, path))
        if handler is not None:
            return path, handler
        for route_method, prefix, name, handler in self._prefixed:
            if path.startswith(prefix) and len(path) > len(prefix) and route_method == method:
                request.path_params[name] = unquote(path[len(prefix) :])
                return prefix + "{" + name + "}", handler
        if path in self.paths():
            raise HTTPError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise HTTPError(404, "not_found", f"no route for {path}")

    async def respond(self, scope: Scope, receive: Receive) -> Response:
        """The response to an HTTP request, errors included; the route template goes in
        `scope["route"]`."""
        request = Request(scope, receive, scope["path"])
        scope["route"] = "unmatched"
        try:
            scope["route"], handler = self._match(request)
            return await handler(request)
        except Exception as error:
            response = self._error_response(error, request)
            drop_tracebacks(error)
            return response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is driven by our own runtime
        response = await self.respond(scope, receive)
        if response.stream is not None:
            await _stream(response, receive, send)
            return
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *response.headers,
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


async def _stream(response: Response, receive: Receive, send: Send) -> None:
    """Send a streaming response until its iterator ends or the client disconnects."""
    assert response.stream is not None
    headers = [(b"content-type", response.content_type), *response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})

    async def pump() -> None:
        assert response.stream is not None
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        async for chunk in response.stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.create_task(pump()), asyncio.create_task(disconnected())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if tasks[0] in done and tasks[0].exception() is None:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def unavailable(reason: str, retry_after: int = 1) -> HTTPError:
    return HTTPError(
        503, "unavailable", reason, headers=[(b"retry-after", str(retry_after).encode())]
    )


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; 400 naming the problem when it is not JSON or not UTF-8."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise HTTPError(400, "malformed_json", f"the body is not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise HTTPError(400, "malformed_json", f"the body is not valid UTF-8: {error}") from error
    except RecursionError:
        raise HTTPError(400, "malformed_json", "the JSON is nested too deeply") from None
