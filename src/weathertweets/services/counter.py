"""The counter: broker → live counters, each record exactly once; also the seed's `POST /set`."""

from __future__ import annotations

from weathertweets.domain import MAX_PAIS, MAX_TEXTO, InvalidTweet, Tweet, clean_text
from weathertweets.ports import BackendUnavailable, CountedTweet, Counters, Message
from weathertweets.services.consuming import Sink
from weathertweets.weather import classify
from weathertweets.web import Handler, HTTPError, Request, Response, parse_json, unavailable

GROUP = "counter"


def count_sink(counters: Counters) -> Sink:
    async def sink(batch: list[tuple[Message, Tweet]]) -> None:
        if batch:
            await counters.apply(
                GROUP,
                [
                    CountedTweet(m.partition, m.offset, t.pais, t.texto, classify(t.texto))
                    for m, t in batch
                ],
            )

    return sink


def set_handler(counters: Counters) -> Handler:
    """`POST /set` with `{"Pais","Texto"}` (the seed's Rust API) or `{"pais","texto"}`."""

    async def handle(request: Request) -> Response:
        data = parse_json(await request.body(16 * 1024))
        if not isinstance(data, dict):
            raise HTTPError(422, "invalid", "the body must be a JSON object")
        try:
            pais = clean_text(data.get("Pais", data.get("pais")), "pais", MAX_PAIS)
            texto = clean_text(data.get("Texto", data.get("texto")), "texto", MAX_TEXTO)
        except InvalidTweet as error:
            raise HTTPError(422, "invalid", error.message, error.field) from error
        try:
            await counters.increment(pais, texto, classify(texto))
        except BackendUnavailable as error:
            raise unavailable(str(error)) from error
        return Response(200, b"Data set", b"text/plain; charset=utf-8")

    return handle
