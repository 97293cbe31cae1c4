"""The HTTP server every service runs: uvicorn on a socket we bind, with bounds on what a client
can make us hold or wait for.

- The request line and headers: at most `MAX_HEAD_BYTES` and `MAX_HEADERS`, else 431; they
  must arrive within `HEAD_TIMEOUT` seconds of the request's first byte, else 408 (slowloris).
- Idle keep-alive connections close after uvicorn's keep-alive timeout.
- Bodies are bounded and timed by the handlers (`web.Request.body`).
The count of bytes happens before the parser keeps them, so a huge header costs at most the
limit plus one read.

The direct lane: a small POST with a declared length to a path the app names in `direct_paths`
is read whole by the protocol, then handed to the app's `respond(scope, receive)` with its body
in the scope, and the `web.Response` it returns is written in one send: no uvicorn request
cycle, no ASGI messages. The hot path of the gateway pays for less machinery; anything else
(and every request to an app without `respond`) takes uvicorn's path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from weathertweets.metrics import REJECTED
from weathertweets.web import BODY_TIMEOUT, DIRECT_BODY, Receive, Response

MAX_HEAD_BYTES = 32 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT = 10.0
KEEP_ALIVE = 30
DIRECT_BODY_LIMIT = 64 * 1024  # larger bodies stream through uvicorn's path


def _plain(status: bytes, code: str, message: str) -> bytes:
    body = f'{{"error":{{"code":"{code}","message":"{message}"}}}}'.encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


TOO_LARGE = _plain(
    b"431 Request Header Fields Too Large",
    "headers_too_large",
    f"the request line and headers exceed {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields",
)
TOO_SLOW = _plain(b"408 Request Timeout", "timeout", "the request headers took too long")
TOO_BROKEN = _plain(b"500 Internal Server Error", "internal", "internal error; see the server log")
BODY_TOO_SLOW = _plain(b"408 Request Timeout", "timeout", "the request body took too long")
_STATUS_LINES: dict[int, bytes] = {}
# (status, content type): (the default headers it was made with, the head up to the length)
_HEADS: dict[tuple[int, bytes], tuple[list[tuple[bytes, bytes]], bytes]] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    return line


Responder = Callable[[MutableMapping[str, Any], Receive], Awaitable[Response]]


class _Unwatched:
    def set(self) -> None:
        """Nothing waits on a direct request's body: it arrived whole."""


class _DirectCycle:
    """Stands where uvicorn keeps its current request while a direct one is in progress, so a
    pipelined request queues behind it and a shutdown or a lost connection reaches it."""

    __slots__ = ("disconnected", "keep_alive", "response_complete")
    message_event = _Unwatched()

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False


class CoalescingTransport:
    """Writes made in one turn of the event loop leave in one send: uvicorn writes a response's
    head and its body separately, and each `send` on a socket costs a system call."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:  # asked twice a request: not through __getattr__
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on the head of each request, and the direct
    lane for the paths in `direct_paths` (set per server by `http_server`)."""

    direct_paths: frozenset[bytes] = frozenset()
    respond: Responder

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._received = 0  # bytes fed while a head was incomplete: what the parser may hold
        self._head_size = 0  # the head itself: request target and header fields
        self._head_count = 0
        self._in_head = True
        self._too_large = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._direct_body: bytearray | None = None  # a direct request's body, while it arrives

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._received += len(data)
        super().data_received(data)
        if self._too_large or (self._in_head and self._received > MAX_HEAD_BYTES):
            self._refuse(TOO_LARGE)
        elif self._head_timer is None:
            # A head, or a direct request's body, still arriving: time it from here. A request
            # that came whole (the usual case) needs no timer at all.
            if self._in_head and self._received:
                self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._refuse, TOO_SLOW)
            elif self._direct_body is not None:
                self._head_timer = self.loop.call_later(BODY_TIMEOUT, self._refuse, BODY_TOO_SLOW)

    def on_message_begin(self) -> None:
        # uvicorn's, less its scope: a direct request never needs it (`_uvicorn_scope`)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._head_size = self._head_count = 0

    def _uvicorn_scope(self) -> None:
        """The scope uvicorn's own `on_message_begin` makes, for a request that goes its way."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        self._head_size += len(name) + len(value) + 4
        if self._head_count <= MAX_HEADERS:  # uvicorn's own, inlined: one call a header, not two
            name = name.lower()
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head_count > MAX_HEADERS or self._head_size > MAX_HEAD_BYTES:
            self._too_large = True  # refused once feed_data returns; never reaches the app
            return
        self._in_head = False
        self._cancel_timer()
        if self._takes_direct():
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            self.cycle = _DirectCycle(keep_alive)  # type: ignore[assignment]
            self._direct_body = bytearray()
            return
        self._uvicorn_scope()
        super().on_headers_complete()

    def _takes_direct(self) -> bool:
        if self.url not in self.direct_paths or self.parser.get_method() != b"POST":
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind a request in progress: keep the order uvicorn keeps
        length = None
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name in (b"transfer-encoding", b"expect", b"upgrade"):
                return False
        return length is not None and length.isdigit() and int(length) <= DIRECT_BODY_LIMIT

    def on_body(self, body: bytes) -> None:
        if self._direct_body is not None:
            self._direct_body += body
        elif not self._too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head, self._received = True, 0  # what follows is the next request's head
        if self._direct_body is not None:
            body, self._direct_body = bytes(self._direct_body), None
            self._cancel_timer()
            self._start_direct(body)
        elif not self._too_large:
            super().on_message_complete()

    def _start_direct(self, body: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.parser.get_http_version(),
            "method": "POST",
            "scheme": self.scheme,
            "path": self.url.decode("ascii"),
            "raw_path": self.url,
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": self.client,
            "server": self.server,
            "extensions": {DIRECT_BODY: body},
        }
        cycle: _DirectCycle = self.cycle  # type: ignore[assignment]
        task = self.loop.create_task(self._answer_direct(scope, body, cycle))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _answer_direct(self, scope: dict[str, Any], body: bytes, cycle: _DirectCycle) -> None:
        """Have the app respond to a whole request; answer in one write, as uvicorn would."""

        async def receive() -> dict[str, Any]:
            if cycle.disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            response: Response | None = await self.respond(scope, receive)
        except asyncio.CancelledError:
            self.transport.close()  # shutting down past its grace period
            raise
        except Exception:
            self.logger.exception("the app failed on a direct request")
            response = None
        answer = self._response(cycle, response)
        if self.flow.write_paused and not cycle.disconnected:
            await self.flow.drain()  # a client that does not read holds up its next request
        if not cycle.disconnected and not self.transport.is_closing():
            self.transport.write(answer)  # coalesced: measured better than a write at once
            if not cycle.keep_alive:
                self.transport.close()
        cycle.response_complete = True
        self.on_response_complete()

    def _response(self, cycle: _DirectCycle, response: Response | None) -> bytes:
        if response is None or response.stream is not None:  # failed, or not a whole answer
            cycle.keep_alive = False
            return TOO_BROKEN
        parts = [self._head(response.status, response.content_type)]
        parts.append(b"content-length: %d\r\n" % len(response.body))
        for name, value in response.headers:
            if name.lower() == b"connection":
                cycle.keep_alive = cycle.keep_alive and value.lower() != b"close"
                continue
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", response.body)
        return b"".join(parts)

    def _head(self, status: int, content_type: bytes) -> bytes:
        """Status line, uvicorn's default headers (its date changes each second) and the
        content type, made once for each while the defaults stay the same."""
        defaults = self.server_state.default_headers
        made = _HEADS.get((status, content_type))
        if made is None or made[0] is not defaults:
            parts = [_status_line(status)]
            for name, value in defaults:
                parts += (name, b": ", value, b"\r\n")
            parts += (b"content-type: ", content_type, b"\r\n")
            made = _HEADS[status, content_type] = (defaults, b"".join(parts))
        return made[1]

    def _unsupported_upgrade_warning(self) -> None:
        """A client asking to switch protocols (WebSocket, h2c) is answered in plain HTTP; that
        is no news for the operator, and uvicorn's advice to install a WebSocket library is not
        ours to give (`ws="none"`: no route speaks WebSocket)."""
        self.logger.debug("an upgrade request answered in plain HTTP")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _cancel_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, answer: bytes) -> None:
        self._cancel_timer()
        if self.transport.is_closing():
            return
        REJECTED.labels("headers_too_large" if answer is TOO_LARGE else "timeout").inc()
        self._direct_body = None
        self.transport.write(answer)
        self.transport.close()


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # our runtime owns the signals and the order of shutdown


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: an address only this machine reaches."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """`reuse_port`: other processes may bind the same port; the kernel shares connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio: NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from error
    return sock  # not inheritable: a child process (a gateway worker) must not hold the port


@asynccontextmanager
async def http_server(
    app: Any, host: str, port: int, reuse_port: bool = False
) -> AsyncIterator[None]:
    """`app`: ASGI. When it also has `respond` (a `Responder`), its `direct_paths` take the
    direct lane."""
    sock = bind(host, port, reuse_port)
    respond = getattr(app, "respond", None)
    paths = frozenset(path.encode() for path in getattr(app, "direct_paths", ()))
    lane = {"direct_paths": paths, "respond": staticmethod(respond)} if respond else {}
    protocol = type("HttpProtocol", (BoundedHttpTools,), lane)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=False,  # no code reads the client's address; a proxy's headers are data
        ws="none",  # no WebSocket routes: the websockets library stays unloaded (1 MB a process)
        timeout_graceful_shutdown=15,
        timeout_keep_alive=KEEP_ALIVE,
        http=protocol,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has a flag, no event
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
        raise OSError(f"HTTP server on {host}:{port} did not start")
    try:
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()
