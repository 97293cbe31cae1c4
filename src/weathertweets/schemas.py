"""The JSON shapes of the HTTP API, declared once: the handlers return these, the live feed
builds its snapshot from them, the OpenAPI document is generated from them, and
`weathertweets.client` decodes into them."""

from __future__ import annotations

from datetime import datetime

import msgspec

from weathertweets.ports import ArchivedTweet
from weathertweets.weather import dominant


class Schema(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Base of every response body."""


class ErrorDetail(Schema, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class ErrorBody(Schema):
    error: ErrorDetail


class Accepted(Schema):
    id: str


class BatchAccepted(Schema):
    accepted: int


class TextCount(Schema):
    texto: str
    count: int


class Stats(Schema):
    total: int
    archived: int
    countries: dict[str, int]
    top_texts: list[TextCount]
    conditions: dict[str, int]


class CountryTexts(Schema):
    pais: str
    total: int
    texts: list[TextCount]


class RecentTweet(Schema):
    id: str
    texto: str
    pais: str
    received_at: datetime
    archived_at: datetime | None = None


class RecentTweets(Schema):
    tweets: list[RecentTweet]


class CountryWeather(Schema):
    dominant: str | None
    counts: dict[str, int]


class Conditions(Schema):
    conditions: dict[str, int]
    countries: dict[str, CountryWeather]


class ServiceIndex(Schema):
    service: str
    version: str
    post: str
    stats: str
    docs: str
    dashboard: str


class Health(Schema):
    status: str


class Readiness(Schema):
    status: str
    checks: dict[str, str]


class MapCounts(Schema):
    iso: dict[str, int]
    unknown: dict[str, int]


class Rate(Schema):
    t: float
    rate: float


class Latency(Schema):
    p50: float | None
    p95: float | None
    sample: int


class Energy(Schema):
    joules: float
    kwh: float
    gco2: float
    tweets: int
    joules_per_1000_tweets: float | None
    scope: str
    model: str


class Dashboard(Schema):
    """One snapshot of the live view (`GET /api/v1/dashboard`, each event of `/api/v1/live`)."""

    at: float
    total: int
    archived: int
    countries: dict[str, int]
    top_texts: list[TextCount]
    map: MapCounts
    conditions: dict[str, int]
    weather: dict[str, CountryWeather]
    recent: list[RecentTweet]
    rates: list[Rate]
    latency: Latency
    energy: Energy | None


def text_counts(pairs: list[tuple[str, int]] | dict[str, int]) -> list[TextCount]:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return [TextCount(texto=t, count=n) for t, n in items]


def weather_by_country(per_country: dict[str, dict[str, int]]) -> dict[str, CountryWeather]:
    return {
        pais: CountryWeather(dominant=dominant(counts), counts=counts)
        for pais, counts in per_country.items()
    }


def recent_tweet(archived: ArchivedTweet) -> RecentTweet:
    tweet = archived.tweet
    return RecentTweet(
        id=tweet.id,
        texto=tweet.texto,
        pais=tweet.pais,
        received_at=tweet.received_at,
        archived_at=archived.archived_at,
    )
