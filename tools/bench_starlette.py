"""The gateway's own handlers served through Starlette instead of our small router, for
`make bench` to measure what the framework costs. Not shipped: run as

    python tools/bench_starlette.py --port 8090 --ingest-port 50090 --data-dir /tmp/wt

It runs `weathertweets up` (every service, embedded backends) with Starlette in front: its
routing, its Request/Response objects and exception handling around the very same handler
functions, the same error registry, and our metrics and access-log middleware around it all.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.responses import StreamingResponse
from starlette.routing import Route

from weathertweets.config import Settings
from weathertweets.middleware import Observed
from weathertweets.runtime import SERVICES, run
from weathertweets.services.gateway import Gateway, count_rejection
from weathertweets.web import Handler, Request, Router

Endpoint = Callable[[StarletteRequest], object]


def _endpoint(router: Router, path: str, handler: Handler) -> Endpoint:
    async def call(request: StarletteRequest) -> StarletteResponse:
        request.scope["route"] = path  # the label our metrics use, as with our router
        ours = Request(request.scope, request.receive, request.url.path)
        ours.path_params.update({k: str(v) for k, v in request.path_params.items()})
        try:
            answer = await handler(ours)
        except Exception as error:
            answer = router.error_response(error, ours)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in answer.headers}
        media = answer.content_type.decode("latin-1")
        if answer.stream is not None:
            return StreamingResponse(answer.stream, answer.status, headers, media)
        return StarletteResponse(answer.body, answer.status, headers, media)

    return call


def starlette_frontend(gateway: Gateway) -> Observed:
    grouped: dict[str, dict[str, Handler]] = {}
    for method, path, handler in gateway.router.routes():
        grouped.setdefault(path.replace("{name}", "{name:path}"), {})[method] = handler
    routes = []
    for path, handlers in grouped.items():
        for method, handler in handlers.items():
            endpoint = _endpoint(gateway.router, path, handler)
            routes.append(Route(path, endpoint, methods=[method]))
    return Observed(Starlette(routes=routes), "gateway", on_response=count_rejection)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ingest-port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    settings = Settings.from_env()
    settings.port, settings.ingest_port, settings.data_dir = (
        args.port,
        args.ingest_port,
        args.data_dir,
    )
    settings.resolve()
    asyncio.run(run(settings, list(SERVICES), frontend=starlette_frontend))


if __name__ == "__main__":
    main()
