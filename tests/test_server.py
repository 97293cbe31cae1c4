"""The HTTP server on a real socket: the direct lane answers like uvicorn's path would, in
order, and gives up on bodies that never come."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvloop

from tests.conftest import free_port
from weathertweets import server
from weathertweets.web import DIRECT_BODY, Message, Receive, Response, Scope, Send


class Echo:
    """Answers with what it saw: the path, the body and whether the server read it whole."""

    direct_paths = frozenset({"/input"})

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def respond(self, scope: Scope, receive: Receive) -> Response:
        body = b""
        more = True
        while more:
            message: Message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/input" and self.delay:
            await asyncio.sleep(self.delay)  # a slow publish: a pipelined request must wait
        direct = b"direct" if DIRECT_BODY in scope.get("extensions", {}) else b"asgi"
        answer = b"%s %s %s" % (scope["path"].encode(), direct, body)
        return Response(202, answer, b"text/plain", [(b"x-seen", b"yes")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.respond(scope, receive)
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", b"%d" % len(response.body)),
            *response.headers,
        ]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


class PlainEcho:
    """Echo without `respond`: an ASGI app only, so every request takes uvicorn's path."""

    direct_paths = Echo.direct_paths

    def __init__(self) -> None:
        self._echo = Echo()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._echo(scope, receive, send)


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[Any] = []

    async def start(app: Any) -> int:
        port = free_port()
        context = server.http_server(app, "127.0.0.1", port)
        await context.__aenter__()
        servers.append(context)
        return port

    yield start
    for context in servers:
        await context.__aexit__(None, None, None)


async def _exchange(
    port: int, data: bytes | list[bytes], *, until: int = 1, wait: float = 5
) -> bytes:
    """Send `data` (a list of parts, sent 50 ms apart, or bytes); read until `until`
    responses arrived or the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    parts = data if isinstance(data, list) else [data]
    for part in parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.05)
    received = b""
    try:
        async with asyncio.timeout(wait):
            while received.count(b"HTTP/1.1 ") < until or not _complete(received):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
    except TimeoutError:
        pass
    writer.close()
    return received


def _complete(received: bytes) -> bool:
    last = received.rfind(b"HTTP/1.1 ")
    head, _, body = received[last:].partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (
        path,
        len(body),
        extra,
        body,
    )


async def test_a_small_post_takes_the_direct_lane_and_the_rest_uvicorn_s(serve: Any) -> None:
    port = await serve(Echo())
    answer = await _exchange(port, _post(b"/input", b"hola"))
    assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert answer.endswith(b"/input direct hola")
    assert b"\r\ndate: " in answer and b"connection: close" not in answer
    assert b"\r\ncontent-type: text/plain\r\n" in answer and b"\r\nx-seen: yes\r\n" in answer
    assert b"\r\ncontent-length: 18\r\n" in answer
    elsewhere = await _exchange(port, _post(b"/other", b"hola"))
    assert elsewhere.endswith(b"/other asgi hola")
    chunked = (
        b"POST /input HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"4\r\nhola\r\n0\r\n\r\n"
    )
    assert (await _exchange(port, chunked)).endswith(b"/input asgi hola")
    big = b"x" * (server.DIRECT_BODY_LIMIT + 1)
    assert (await _exchange(port, _post(b"/input", big))).endswith(b"/input asgi " + big)
    with_query = await _exchange(port, _post(b"/input?a=1", b"hola"))
    assert with_query.endswith(b"/input asgi hola")


async def test_an_app_without_respond_gets_every_request_over_asgi(serve: Any) -> None:
    port = await serve(PlainEcho())
    answer = await _exchange(port, _post(b"/input", b"hola"))
    assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert answer.endswith(b"/input asgi hola")


async def test_a_websocket_upgrade_is_answered_in_plain_http(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = await serve(Echo())
    upgrade = (
        b"GET /other HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with caplog.at_level(logging.WARNING):
        answer = await _exchange(port, upgrade)
    assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n") and answer.endswith(b"/other asgi ")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_pipelined_requests_are_answered_in_order(serve: Any) -> None:
    port = await serve(Echo(delay=0.2))
    requests = (
        _post(b"/input", b"one")
        + _post(b"/other", b"two")
        + _post(b"/input", b"three")
        + _post(b"/input", b"four")
    )
    answer = await _exchange(port, requests, until=4)
    bodies = [part.rsplit(b"\r\n\r\n", 1)[-1] for part in answer.split(b"HTTP/1.1 202")[1:]]
    assert [body.split(b" ")[-1] for body in bodies] == [b"one", b"two", b"three", b"four"]


async def test_expect_100_continue_gets_its_interim_answer_before_the_body(serve: Any) -> None:
    port = await serve(Echo())
    head = b"POST /input HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    async with asyncio.timeout(5):  # the body goes only once the server asked for it
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hola")
        answer = await reader.readuntil(b"/input asgi hola")
    writer.close()
    assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n")


async def test_a_body_in_pieces_arrives_whole(serve: Any) -> None:
    port = await serve(Echo())
    request = _post(b"/input", b"en tres partes")
    answer = await _exchange(port, [request[:-10], request[-10:-4], request[-4:]])
    assert answer.endswith(b"/input direct en tres partes")


async def test_connection_close_and_http_1_0_close_after_the_answer(serve: Any) -> None:
    port = await serve(Echo())
    closing = await _exchange(port, _post(b"/input", b"bye", b"connection: close\r\n"), wait=2)
    assert b"connection: close\r\n" in closing and closing.endswith(b"/input direct bye")
    old = _post(b"/input", b"viejo").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    answer = await _exchange(port, old, wait=2)
    assert b"connection: close\r\n" in answer and answer.endswith(b"/input direct viejo")


async def test_a_body_that_never_comes_is_408(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "BODY_TIMEOUT", 0.3)
    port = await serve(Echo())
    head_only = b"POST /input HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc"
    answer = await _exchange(port, head_only, wait=3)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body took too long" in answer


async def test_a_client_that_leaves_mid_request_costs_nothing(serve: Any) -> None:
    app = Echo(delay=0.3)
    port = await serve(app)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post(b"/input", b"me voy"))
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.5)
    answer = await _exchange(port, _post(b"/input", b"sigo"))
    assert answer.endswith(b"/input direct sigo")


async def test_a_pipelined_body_after_an_answer_is_a_body_not_a_head(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "HEAD_TIMEOUT", 0.5)
    port = await serve(Echo(delay=0.2))
    big = _post(b"/input", b"x" * 40_000)  # over the head limit, were it counted as head
    small = _post(b"/input", b"y" * 100)
    for second in (big, small):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post(b"/input", b"one") + second[:120])
        await asyncio.sleep(0.4)  # the first answer goes out before the rest arrives
        writer.write(second[120:])
        received = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):  # past HEAD_TIMEOUT: no stray 408 either
                while chunk := await reader.read(65536):
                    received += chunk
        writer.close()
        assert received.count(b"HTTP/1.1 202 ") == 2 and b" 431 " not in received
        assert b" 408 " not in received and received.endswith(second[-100:][-20:])


async def test_a_client_that_does_not_read_its_answers_is_not_buffered_for(serve: Any) -> None:
    answer = b"z" * 16384
    handled = 0

    class Big(Echo):
        async def respond(self, scope: Scope, receive: Receive) -> Response:
            nonlocal handled
            handled += 1
            return Response(202, answer)

    port = await serve(Big())
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    _, writer = await asyncio.open_connection(sock=sock)
    for _ in range(600):  # ~10 MB of answers, were they all written; none is read
        writer.write(_post(b"/input", b"{}"))
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.5)
    writer.close()
    assert 0 < handled < 400  # it stopped taking requests while the answers piled up


def test_a_listening_socket_is_not_passed_to_child_processes() -> None:
    """The parent of `up --workers N` binds its metrics port before it starts the workers: a
    worker that inherited the socket held the port for a second after the parent died, and a
    restart in that second failed with "address already in use"."""
    sock = server.bind("127.0.0.1", 0)
    ours = os.readlink(f"/proc/self/fd/{sock.fileno()}")
    show = (
        "import os; fds = ['/proc/self/fd/' + f for f in os.listdir('/proc/self/fd')];"
        " print([os.readlink(f) for f in fds if os.path.exists(f)])"
    )

    async def child() -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            show,
            stdin=asyncio.subprocess.DEVNULL,  # as the workers are started
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        return out.decode()

    loop = uvloop.new_event_loop()  # the runtime's loop: it spawns as the workers are spawned
    try:
        held = loop.run_until_complete(child())
    finally:
        loop.close()
        sock.close()
    assert ours.startswith("socket:") and "/dev/null" in held  # the child did list its files
    assert ours not in held
