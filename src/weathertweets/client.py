"""A client for the gateway's HTTP API, synchronous (`Client`) and asynchronous (`AsyncClient`).

    from weathertweets.client import Client

    with Client("http://127.0.0.1:8080") as wt:
        tweet_id = wt.publish("Calor sofocante", "Turquía")
        print(wt.stats().countries)

Every write carries an `Idempotency-Key` (one per call, the same on each retry of that call),
and a bearer key when given one. Answers 503 and 429 are retried with exponential back-off,
honouring `Retry-After`; other errors raise `ApiError` with the server's code, message and field.
Responses decode into the types of `weathertweets.schemas`, the ones the server encodes.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from weathertweets import schemas

T = TypeVar("T")
RETRIED = frozenset({429, 503})
TWEET_PATH = "/input"
BATCH_PATH = "/api/v1/tweets"


class ApiError(Exception):
    """The gateway refused a request (or kept answering 503/429 until the retries ran out)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass(frozen=True)
class Retries:
    """How hard to try: `attempts` in all, waits doubling from `first_wait` up to `max_wait`
    (a server's Retry-After wins when it asks for longer)."""

    attempts: int = 5
    first_wait: float = 0.2
    max_wait: float = 5.0

    def wait(self, attempt: int, retry_after: str | None) -> float:
        backoff = min(self.max_wait, self.first_wait * 2.0**attempt) * random.uniform(0.5, 1.0)
        if retry_after and retry_after.strip().isdigit():
            return max(backoff, min(float(retry_after), 60.0))
        return backoff


NO_RETRIES = Retries(attempts=1)


def new_key() -> str:
    return uuid.uuid4().hex


def write_headers(api_key: str | None = None, idempotency_key: str | None = None) -> dict[str, str]:
    """Headers of a write: JSON, the idempotency key (new unless given), the bearer key."""
    headers = {"content-type": "application/json", "idempotency-key": idempotency_key or new_key()}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def tweet_body(texto: str, pais: str) -> dict[str, str]:
    return {"texto": texto, "pais": pais}


def _batch_body(tweets: Iterable[Mapping[str, str] | tuple[str, str]]) -> list[dict[str, str]]:
    return [dict(t) if isinstance(t, Mapping) else tweet_body(*t) for t in tweets]


def _error(response: httpx.Response) -> ApiError:
    try:
        detail = msgspec.json.decode(response.content, type=schemas.ErrorBody).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ApiError(response.status_code, "unexpected", response.text[:200])
    return ApiError(response.status_code, detail.code, detail.message, detail.field)


def _decode(response: httpx.Response, kind: type[T]) -> T:
    if response.status_code >= 400:
        raise _error(response)
    try:
        return msgspec.json.decode(response.content, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ApiError(response.status_code, "unexpected_answer", str(error)) from error


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _Calls:
    """What each API call sends and what it decodes, shared by both clients."""

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self.read_headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    def publish(self, texto: str, pais: str, key: str | None) -> _Request:
        headers = write_headers(self.api_key, key)
        return _Request("POST", TWEET_PATH, json=tweet_body(texto, pais), headers=headers)

    def publish_batch(
        self, tweets: Iterable[Mapping[str, str] | tuple[str, str]], key: str | None
    ) -> _Request:
        headers = write_headers(self.api_key, key)
        return _Request("POST", BATCH_PATH, json=_batch_body(tweets), headers=headers)

    def get(self, path: str, **params: Any) -> _Request:
        query = {k: v for k, v in params.items() if v is not None}
        return _Request("GET", path, params=query, headers=self.read_headers)


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: Retries | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._calls = _Calls(api_key)
        self._retries = retries or Retries()

    def _send(self, request: _Request) -> httpx.Response:
        for attempt in range(self._retries.attempts):
            response = self._http.request(
                request.method,
                request.path,
                params=request.params,
                json=request.json,
                headers=request.headers,
            )
            if response.status_code not in RETRIED or attempt + 1 == self._retries.attempts:
                return response
            time.sleep(self._retries.wait(attempt, response.headers.get("retry-after")))
        raise AssertionError("unreachable: attempts >= 1")

    def publish(self, texto: str, pais: str, *, idempotency_key: str | None = None) -> str:
        """Post one tweet; its id once the broker has it."""
        answer = self._send(self._calls.publish(texto, pais, idempotency_key))
        return _decode(answer, schemas.Accepted).id

    def publish_batch(
        self,
        tweets: Iterable[Mapping[str, str] | tuple[str, str]],
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """Post a batch, all or nothing; how many were accepted."""
        answer = self._send(self._calls.publish_batch(tweets, idempotency_key))
        return _decode(answer, schemas.BatchAccepted).accepted

    def stats(self, top: int = 10) -> schemas.Stats:
        return _decode(self._send(self._calls.get("/api/v1/stats", top=top)), schemas.Stats)

    def country(self, pais: str) -> schemas.CountryTexts:
        path = f"/api/v1/countries/{quote(pais, safe='')}"
        return _decode(self._send(self._calls.get(path)), schemas.CountryTexts)

    def recent(self, pais: str | None = None, limit: int = 20) -> list[schemas.RecentTweet]:
        request = self._calls.get("/api/v1/tweets", pais=pais, limit=limit)
        return _decode(self._send(request), schemas.RecentTweets).tweets

    def conditions(self) -> schemas.Conditions:
        return _decode(self._send(self._calls.get("/api/v1/conditions")), schemas.Conditions)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: Retries | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, limits=limits
        )
        self._calls = _Calls(api_key)
        self._retries = retries or Retries()

    async def _send(self, request: _Request) -> httpx.Response:
        for attempt in range(self._retries.attempts):
            response = await self._http.request(
                request.method,
                request.path,
                params=request.params,
                json=request.json,
                headers=request.headers,
            )
            if response.status_code not in RETRIED or attempt + 1 == self._retries.attempts:
                return response
            await asyncio.sleep(self._retries.wait(attempt, response.headers.get("retry-after")))
        raise AssertionError("unreachable: attempts >= 1")

    async def publish(self, texto: str, pais: str, *, idempotency_key: str | None = None) -> str:
        answer = await self._send(self._calls.publish(texto, pais, idempotency_key))
        return _decode(answer, schemas.Accepted).id

    async def publish_batch(
        self,
        tweets: Iterable[Mapping[str, str] | tuple[str, str]],
        *,
        idempotency_key: str | None = None,
    ) -> int:
        answer = await self._send(self._calls.publish_batch(tweets, idempotency_key))
        return _decode(answer, schemas.BatchAccepted).accepted

    async def stats(self, top: int = 10) -> schemas.Stats:
        answer = await self._send(self._calls.get("/api/v1/stats", top=top))
        return _decode(answer, schemas.Stats)

    async def country(self, pais: str) -> schemas.CountryTexts:
        path = f"/api/v1/countries/{quote(pais, safe='')}"
        return _decode(await self._send(self._calls.get(path)), schemas.CountryTexts)

    async def recent(self, pais: str | None = None, limit: int = 20) -> list[schemas.RecentTweet]:
        request = self._calls.get("/api/v1/tweets", pais=pais, limit=limit)
        return _decode(await self._send(request), schemas.RecentTweets).tweets

    async def conditions(self) -> schemas.Conditions:
        answer = await self._send(self._calls.get("/api/v1/conditions"))
        return _decode(answer, schemas.Conditions)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
