"""Routes every service serves: liveness, readiness of its backends, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from weathertweets.metrics import exposition
from weathertweets.schemas import Health, Readiness
from weathertweets.web import Request, Response, Router

Check = Callable[[], Awaitable[None]]


async def _outcome(check: Check, timeout: float) -> str:
    try:
        await asyncio.wait_for(check(), timeout)
    except Exception as error:
        return f"failing: {error or type(error).__name__}"
    return "ok"


def add_ops_routes(router: Router, checks: Mapping[str, Check], timeout: float = 3.0) -> None:
    async def healthz(_: Request) -> Response:
        return Response.json(Health(status="ok"))

    async def readyz(_: Request) -> Response:
        names = list(checks)
        outcomes = await asyncio.gather(*(_outcome(checks[n], timeout) for n in names))
        report = dict(zip(names, outcomes, strict=True))
        ready = all(outcome == "ok" for outcome in outcomes)
        headers = [] if ready else [(b"retry-after", b"1")]
        body = Readiness(status="ready" if ready else "unavailable", checks=report)
        return Response.json(body, 200 if ready else 503, headers)

    async def metrics(_: Request) -> Response:
        body, content_type = exposition()
        return Response(200, body, content_type.encode())

    router.add("GET", "/healthz", healthz)
    router.add("GET", "/readyz", readyz)
    router.add("GET", "/metrics", metrics)
