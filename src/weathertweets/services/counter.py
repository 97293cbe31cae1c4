"""The counter: broker → live counters, each record exactly once; also the seed's `POST /set`."""

from __future__ import annotations

from weathertweets.access import Access
from weathertweets.domain import MAX_TEXTO, Tweet, clean_country, clean_text
from weathertweets.ports import BackendUnavailable, CountedTweet, Counters, Message
from weathertweets.services.consuming import Sink
from weathertweets.services.writes import WriteGuard, idempotency_key, keyed_tweets, outcome_unknown
from weathertweets.weather import classify
from weathertweets.web import Handler, HTTPError, Request, Response, parse_json, unavailable

GROUP = "counter"


def count_sink(counters: Counters) -> Sink:
    async def sink(batch: list[tuple[Message, Tweet]]) -> None:
        if batch:
            await counters.apply(
                GROUP,
                [
                    CountedTweet(
                        m.partition,
                        m.offset,
                        t.pais,
                        t.texto,
                        classify(t.texto),
                        t.id if t.keyed else None,
                    )
                    for m, t in batch
                ],
            )

    return sink


DATA_SET = Response(200, b"Data set", b"text/plain; charset=utf-8")
REPLAYED = [(b"idempotent-replayed", b"true")]


def set_handler(
    counters: Counters, accept_unknown_countries: bool = False, guard: WriteGuard | None = None
) -> Handler:
    """`POST /set` with `{"Pais","Texto"}` (the seed's Rust API) or `{"pais","texto"}`.

    With an Idempotency-Key the increment is applied once: its id, derived from the key, is
    checked in the same atomic step as the increment."""
    guard = guard or WriteGuard(Access())

    async def handle(request: Request) -> Response:
        caller = guard.admit(request)
        data = parse_json(await request.body(16 * 1024))
        if not isinstance(data, dict):
            raise HTTPError(422, "invalid", "the body must be a JSON object")
        pais = clean_country(data.get("Pais", data.get("pais")), accept_unknown_countries)
        texto = clean_text(data.get("Texto", data.get("texto")), "texto", MAX_TEXTO)
        guard.limit(caller, 1)
        key = idempotency_key(request)
        tweet_id = None
        if key is not None:
            claim = await guard.claim(caller, key, "set", [(texto, pais)])
            if claim.status is not None:
                return Response(DATA_SET.status, DATA_SET.body, DATA_SET.content_type, REPLAYED)
            tweet_id = keyed_tweets(caller, key, claim, [(texto, pais)])[0].id
        try:
            await counters.increment(pais, texto, classify(texto), id=tweet_id)
        except BackendUnavailable as error:
            if key is not None:
                raise outcome_unknown(str(error)) from error
            raise unavailable(str(error)) from error
        if key is not None:
            await guard.complete(caller, key, DATA_SET)
        return DATA_SET

    return handle
