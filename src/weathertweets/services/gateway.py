"""The gateway (ASGI): accepts tweets over HTTP, forwards them to ingest, serves the read API."""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from weathertweets import __version__, schemas, tracing
from weathertweets.access import Access
from weathertweets.countries import canonical
from weathertweets.domain import InvalidTweet, Tweet, parse_fields
from weathertweets.forms import FORM_TYPES, parse_form
from weathertweets.logs import TWEET_ID
from weathertweets.metrics import ACCEPTED, BATCH_SIZE, REJECTED
from weathertweets.middleware import Observed
from weathertweets.openapi import docs_page, openapi_spec
from weathertweets.ports import BackendUnavailable, Counters, Store
from weathertweets.services.assets import load_assets, wants_html
from weathertweets.services.counter import set_handler
from weathertweets.services.errors import APP_ERRORS, REJECTION_REASONS
from weathertweets.services.live import LiveFeed
from weathertweets.services.ops import Check, add_ops_routes
from weathertweets.services.writes import WriteGuard
from weathertweets.web import (
    Handler,
    HTTPError,
    Request,
    Response,
    Router,
    Scope,
    parse_json,
    unavailable,
)

SINGLE_BODY_LIMIT = 64 * 1024
READ_TIMEOUT = 2.5  # seconds a read waits for the store or the counters
BATCH_BODY_LIMIT = 16 * 1024 * 1024
BATCH_BYTES_IN_FLIGHT = 24 * 1024 * 1024  # about 6× that in decoded objects: fits 256 Mi
NDJSON_TYPES = {"application/x-ndjson", "application/jsonl", "application/ndjson"}
# The course's path, the original's two, and the same with a trailing slash: the original's
# Locust file, given the host `http://<ingress>/insert`, posts to `/insert/`.
TWEET_PATHS = ("/input", "/input/", "/", "/insert", "/insert/")
WRITE_PATHS = frozenset({*TWEET_PATHS, "/api/v1/tweets", "/set"})
# Routes only the cluster reaches (probes, Prometheus); everything else goes through the ingress.
INTERNAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Budget:
    """A weighted semaphore: `hold(n)` waits until n more units fit under `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.used = capacity, 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, units: int, wait: float = 5.0) -> AsyncIterator[None]:
        """Waits at most `wait` seconds for room, then 503: a slow sender cannot queue everyone."""
        try:
            async with asyncio.timeout(wait), self._changed:
                await self._changed.wait_for(lambda: self.used + units <= self.capacity)
                self.used += units
        except TimeoutError:
            raise unavailable("too many large batches in progress; retry soon") from None
        try:
            yield
        finally:
            async with self._changed:
                self.used -= units
                self._changed.notify_all()


def count_rejection(scope: Scope, status: int) -> None:
    """`weathertweets_tweets_rejected_total{reason}`: refused writes, not failed reads."""
    if status >= 400 and scope["method"] == "POST" and scope.get("route") in WRITE_PATHS:
        REJECTED.labels(REJECTION_REASONS.get(status, str(status))).inc()


def _headers(request: Request) -> list[tuple[str, bytes]]:
    return [(bytes(k).decode("latin-1"), bytes(v)) for k, v in request.scope["headers"]]


def _one(tweets: list[Tweet]) -> Response:
    return Response.json(schemas.Accepted(id=tweets[0].id), 202)


def _many(tweets: list[Tweet]) -> Response:
    return Response.json(schemas.BatchAccepted(accepted=len(tweets)), 202)


class Publisher(Protocol):
    async def publish(
        self, tweets: Sequence[Tweet], headers: Sequence[Mapping[str, str]] = ()
    ) -> None: ...

    async def ping(self) -> None: ...


def _require_json(request: Request, also: set[str] | frozenset[str] = frozenset()) -> str:
    media = request.media_type()
    if media in ("", "application/json") or media.endswith("+json") or media in also:
        return media
    accepted = ", ".join(["application/json", *sorted(also)])
    raise HTTPError(415, "unsupported_media_type", f"send {accepted}, not {media}", "content-type")


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise HTTPError(422, "invalid", f"'{name}' must be an integer from {low} to {high}", name)
    return int(raw)


def _country_name(raw: str) -> str:
    """The name to look up: the canonical one when we know the country ("Mexico" → "México")."""
    name = unicodedata.normalize("NFC", raw.strip())
    return canonical(name) or name


class Gateway:
    def __init__(
        self,
        ingest: Publisher,
        store: Store,
        counters: Counters,
        *,
        max_batch: int = 10_000,
        live: LiveFeed | None = None,
        access_log: bool = True,
        checks: Mapping[str, Check] | None = None,
        accept_unknown_countries: bool = False,
        guard: WriteGuard | None = None,
        max_concurrent: int = 1000,
    ) -> None:
        self._ingest, self._store, self._counters = ingest, store, counters
        self._guard = guard or WriteGuard(Access())
        self._live = live
        self._assets = load_assets()
        self._max_batch = max_batch
        self._accept_unknown = accept_unknown_countries
        self._batch_bytes = Budget(BATCH_BYTES_IN_FLIGHT)
        self.router = Router("gateway", APP_ERRORS)
        self.app = Observed(
            self.router,
            "gateway",
            access_log=access_log,
            on_response=count_rejection,
            max_concurrent=max_concurrent,
            direct_paths=WRITE_PATHS,
        )
        for path in TWEET_PATHS:
            self.router.add("POST", path, self.post_tweet)
            self.router.add("GET", path, self.index)  # the original's Locust also GETs them
        self.router.add(
            "POST", "/set", set_handler(counters, accept_unknown_countries, self._guard)
        )
        self.router.add("POST", "/api/v1/tweets", self.post_batch)
        read = self._reader
        self.router.add("GET", "/api/v1/stats", read(self.stats))
        self.router.add("GET", "/api/v1/countries/{pais}", read(self.country))
        self.router.add("GET", "/api/v1/tweets", read(self.recent))
        self.router.add("GET", "/api/v1/conditions", read(self.conditions))
        self.router.add("GET", "/dashboard", self.dashboard)
        self.router.add("GET", "/static/{name}", self.static)
        self.router.add("GET", "/api/v1/live", read(self.live_events))
        self.router.add("GET", "/api/v1/dashboard", read(self.live_snapshot))
        self.router.add("GET", "/openapi.json", self.openapi)
        self.router.add("GET", "/docs", self.docs)
        default_checks = {"ingest": ingest.ping, "store": store.ping, "counters": counters.ping}
        add_ops_routes(self.router, default_checks if checks is None else checks)

    async def post_tweet(self, request: Request) -> Response:
        if tracing.enabled():
            with tracing.span(
                f"POST {request.path}", "gateway", parent=_headers(request), kind="server"
            ):
                return await self._post_tweet(request)
        return await self._post_tweet(request)

    def _reader(self, handler: Handler) -> Handler:
        """A read route: public unless read keys are configured, and 503 rather than a hang
        when a backend stalls."""

        async def guarded(request: Request) -> Response:
            self._guard.access.reader(request)
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    return await handler(request)
            except TimeoutError:
                raise BackendUnavailable(
                    f"no answer from a backend within {READ_TIMEOUT:g} s"
                ) from None

        return guarded

    async def _publish(self, tweets: list[Tweet]) -> None:
        TWEET_ID.set(tweets[0].id if len(tweets) == 1 else None)
        if tracing.enabled():
            await self._ingest.publish(tweets, [tracing.current_headers()] * len(tweets))
        else:
            await self._ingest.publish(tweets)
        ACCEPTED.inc(len(tweets))

    async def _post_tweet(self, request: Request) -> Response:
        caller = self._guard.admit(request)
        media = _require_json(request, FORM_TYPES)
        body = await request.body(SINGLE_BODY_LIMIT)
        if media in FORM_TYPES:
            fields: object = parse_form(media, request.header(b"content-type") or b"", body)
        else:
            fields = parse_json(body)
        pair = parse_fields(fields, self._accept_unknown)
        return await self._guard.write(request, caller, "tweet", [pair], self._publish, _one)

    async def post_batch(self, request: Request) -> Response:
        # Batches in progress hold at most BATCH_BYTES_IN_FLIGHT of bodies (a missing length
        # counts as the largest body): the others wait with their bodies still in the socket,
        # so peak memory stays bounded however many clients send at once.
        self._guard.admit(request)  # a caller with no right to write never waits in line
        declared = request.header(b"content-length")
        size = int(declared) if declared and declared.isascii() and declared.isdigit() else 0
        async with self._batch_bytes.hold(min(size or BATCH_BODY_LIMIT, BATCH_BODY_LIMIT)):
            return await self._traced_batch(request)

    async def _traced_batch(self, request: Request) -> Response:
        if tracing.enabled():
            with tracing.span(
                "POST /api/v1/tweets", "gateway", parent=_headers(request), kind="server"
            ):
                return await self._post_batch(request)
        return await self._post_batch(request)

    async def _post_batch(self, request: Request) -> Response:
        caller = self._guard.admit(request)
        media = _require_json(request, NDJSON_TYPES)
        body = await request.body(BATCH_BODY_LIMIT)
        records = self._ndjson(body) if media in NDJSON_TYPES else parse_json(body)
        if not isinstance(records, list):
            raise HTTPError(422, "invalid", "a batch must be a JSON array of tweets")
        if not records:
            raise HTTPError(422, "invalid", "the batch is empty")
        if len(records) > self._max_batch:
            raise HTTPError(
                413, "too_large", f"{len(records)} tweets; at most {self._max_batch} per batch"
            )
        pairs = []
        for index, record in enumerate(records):
            try:
                pairs.append(parse_fields(record, self._accept_unknown))
            except InvalidTweet as error:
                raise error.at(index) from error
        BATCH_SIZE.labels("gateway").observe(len(pairs))
        return await self._guard.write(request, caller, "batch", pairs, self._publish, _many)

    @staticmethod
    def _ndjson(body: bytes) -> list[Any]:
        records = []
        for number, line in enumerate(body.splitlines()):
            if line.strip():
                try:
                    records.append(parse_json(line))
                except HTTPError as error:
                    raise HTTPError(
                        400, error.code, f"line {number + 1}: {error.message}"
                    ) from None
        return records

    async def stats(self, request: Request) -> Response:
        top = _int_query(request, "top", 10, 1, 1000)
        stats, archived = await asyncio.gather(self._counters.stats(top), self._store.count())
        return Response.json(
            schemas.Stats(
                total=stats.total,
                archived=archived,
                countries=stats.countries,
                top_texts=schemas.text_counts(stats.top_texts),
                conditions=stats.conditions,
            )
        )

    async def conditions(self, _: Request) -> Response:
        per_country = await self._counters.country_conditions()
        totals: dict[str, int] = {}
        for counts in per_country.values():
            for condition, n in counts.items():
                totals[condition] = totals.get(condition, 0) + n
        return Response.json(
            schemas.Conditions(
                conditions=dict(sorted(totals.items(), key=lambda cn: (-cn[1], cn[0]))),
                countries=schemas.weather_by_country(per_country),
            )
        )

    async def country(self, request: Request) -> Response:
        pais = _country_name(request.path_params["pais"])
        texts, stats = await asyncio.gather(
            self._counters.country(pais), self._counters.stats(top=1)
        )
        total = stats.countries.get(pais, sum(texts.values()))  # exact, the texts may be capped
        return Response.json(
            schemas.CountryTexts(pais=pais, total=total, texts=schemas.text_counts(texts))
        )

    async def recent(self, request: Request) -> Response:
        limit = _int_query(request, "limit", 20, 1, 1000)
        raw_pais = request.query("pais")
        pais = _country_name(raw_pais) if raw_pais else None
        docs = await self._store.recent(pais, limit)
        return Response.json(schemas.RecentTweets(tweets=[schemas.recent_tweet(d) for d in docs]))

    async def index(self, request: Request) -> Response:
        if wants_html(request):
            return await self.dashboard(request)
        return Response.json(
            schemas.ServiceIndex(
                service="weathertweets",
                version=__version__,
                post="/input",
                stats="/api/v1/stats",
                docs="/docs",
                dashboard="/dashboard",
            )
        )

    async def dashboard(self, _: Request) -> Response:
        page = self._assets["dashboard.html"]
        return Response(200, page.body, page.content_type, [(b"cache-control", b"no-cache")])

    async def static(self, request: Request) -> Response:
        asset = self._assets.get(request.path_params["name"])
        if asset is None:
            raise HTTPError(404, "not_found", f"no asset {request.path_params['name']!r}")
        return Response(200, asset.body, asset.content_type, [(b"cache-control", b"max-age=300")])

    def _feed(self) -> LiveFeed:
        if self._live is None:
            raise HTTPError(404, "not_found", "the live view is not enabled")
        return self._live

    async def live_snapshot(self, _: Request) -> Response:
        return Response(200, await self._feed().snapshot())

    async def live_events(self, _: Request) -> Response:
        if self._feed().full:
            raise unavailable("too many live viewers on this process; retry later", 5)
        headers = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        return Response(200, b"", b"text/event-stream", headers, stream=self._feed().subscribe())

    async def openapi(self, _: Request) -> Response:
        return Response.json(openapi_spec())

    async def docs(self, _: Request) -> Response:
        return Response(200, docs_page().encode(), b"text/html; charset=utf-8")
