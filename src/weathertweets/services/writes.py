"""The write path's guard: who may write, how fast, and what a retried request does.

A write with an `Idempotency-Key` (per caller, kept 25 h) is claimed before it is published:
the claim fixes the tweets' ids and time, derived from the key, so a retry after an ambiguous
failure publishes the very same tweets again and the sinks keep one of each (archive by `_id`,
counters by id). A retry of a finished request gets the first answer back, marked
`Idempotent-Replayed: true`; the same key with another body is 422. Without a key a client
retry is at-least-once.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import msgspec

from weathertweets.access import Access, RateLimiter
from weathertweets.domain import Tweet, make_tweets, utcnow
from weathertweets.ids import derived_id
from weathertweets.ports import BackendUnavailable, Claim, Idempotency
from weathertweets.web import HTTPError, Request, Response

MAX_KEY_LENGTH = 255
Publish = Callable[[list[Tweet]], Awaitable[None]]


class OutcomeUnknown(BackendUnavailable):
    """The broker may or may not have the tweets: retry with the same Idempotency-Key."""


def outcome_unknown(reason: str) -> HTTPError:
    return HTTPError(
        503,
        "outcome_unknown",
        f"{reason}; the tweets may or may not be stored: retry with the same Idempotency-Key",
        headers=[(b"retry-after", b"1")],
    )


def idempotency_key(request: Request) -> str | None:
    raw = request.header(b"idempotency-key")
    if raw is None:
        return None
    key = raw.decode("latin-1")
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(0x21 <= ord(c) <= 0x7E for c in key):
        raise HTTPError(
            400,
            "bad_idempotency_key",
            f"an Idempotency-Key is 1 to {MAX_KEY_LENGTH} visible ASCII characters",
            "idempotency-key",
        )
    return key


def fingerprint(kind: str, pairs: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(kind.encode() + b"\0" + msgspec.json.encode(pairs)).hexdigest()


def keyed_tweets(
    caller: str, key: str, claim: Claim, pairs: Sequence[tuple[str, str]]
) -> list[Tweet]:
    """The tweets a key stands for: ids and time fixed by the claim, the same on every retry."""
    received = claim.received_at_us
    moment = datetime.fromtimestamp(received / 1_000_000, UTC)
    ms = received // 1000
    return [
        Tweet(derived_id(f"{caller}/{key}/{i}", ms), texto, pais, moment, keyed=True)
        for i, (texto, pais) in enumerate(pairs)
    ]


class WriteGuard:
    def __init__(
        self,
        access: Access,
        limiter: RateLimiter | None = None,
        idempotency: Idempotency | None = None,
    ) -> None:
        self.access = access
        self._limiter = limiter or RateLimiter(0)
        self._idempotency = idempotency

    def admit(self, request: Request) -> str:
        """Before the body is read: the caller's id, or 401/403."""
        return self.access.writer(request)

    def limit(self, caller: str, tweets: int) -> None:
        self._limiter.take(caller, tweets)

    async def claim(
        self, caller: str, key: str, kind: str, pairs: Sequence[tuple[str, str]]
    ) -> Claim:
        if self._idempotency is None:
            raise HTTPError(
                400, "idempotency_unsupported", "this service keeps no keys", "idempotency-key"
            )
        mark = fingerprint(kind, pairs)
        claim = await self._idempotency.claim(caller, key, mark, time.time_ns() // 1000)
        if claim.fingerprint != mark:
            raise HTTPError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request; use a new key",
                "idempotency-key",
            )
        return claim

    async def write(
        self,
        request: Request,
        caller: str,
        kind: str,
        pairs: list[tuple[str, str]],
        publish: Publish,
        answer: Callable[[list[Tweet]], Response],
    ) -> Response:
        """Rate-limit, then publish `pairs` as tweets, once per Idempotency-Key."""
        self.limit(caller, len(pairs))
        key = idempotency_key(request)
        if key is None:
            tweets = make_tweets(pairs, utcnow())
            await self._publish(publish, tweets)
            return answer(tweets)
        claim = await self.claim(caller, key, kind, pairs)
        if claim.status is not None and claim.body is not None:
            return Response(claim.status, claim.body, headers=[(b"idempotent-replayed", b"true")])
        tweets = keyed_tweets(caller, key, claim, pairs)
        await self._publish(publish, tweets)
        response = answer(tweets)
        await self.complete(caller, key, response)
        return response

    async def complete(self, caller: str, key: str, response: Response) -> None:
        """Remember the answer for the key's retries (best effort: a retry that finds none
        republishes the same ids, and the sinks keep one of each)."""
        if self._idempotency is not None:
            with contextlib.suppress(BackendUnavailable):
                await self._idempotency.complete(caller, key, response.status, response.body)

    @staticmethod
    async def _publish(publish: Publish, tweets: list[Tweet]) -> None:
        try:
            await publish(tweets)
        except OutcomeUnknown as error:
            raise outcome_unknown(str(error)) from error
