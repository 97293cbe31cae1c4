"""The domain: a tweet about the weather, its validation, and its record on the broker."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from weathertweets.countries import canonical
from weathertweets.ids import derived_id, new_id, new_ids

MAX_TEXTO = 280
MAX_PAIS = 64

# Field spellings accepted from clients, canonical name first.
TEXTO_ALIASES = ("texto", "text")
PAIS_ALIASES = ("pais", "país", "country")


class Tweet(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One accepted tweet; `id` is time-ordered and unique, `received_at` is UTC.

    `keyed`: sent with an Idempotency-Key, so the same tweet (same id) may reach the broker
    more than once after a retry; the sinks keep it once."""

    id: str
    texto: str
    pais: str
    received_at: datetime
    keyed: bool = False


class InvalidTweet(ValueError):
    """A client sent something that is not a tweet. `field` names the culprit when there is one."""

    def __init__(self, message: str, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.index = index

    def at(self, index: int) -> InvalidTweet:
        located = f"[{index}].{self.field}" if self.field else f"[{index}]"
        return InvalidTweet(f"record {index}: {self.message}", located, index)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def utcnow() -> datetime:
    return datetime.now(UTC)


def clean_text(value: object, field: str, limit: int) -> str:
    """Trim and NFC-normalise one text field, or raise InvalidTweet naming it."""
    if not isinstance(value, str):
        raise InvalidTweet(f"'{field}' must be a string, not {_json_type(value)}", field)
    text = value.strip()
    if not text.isascii():  # ASCII is already NFC
        text = unicodedata.normalize("NFC", text)
    if not text:
        raise InvalidTweet(f"'{field}' must not be empty", field)
    if len(text) > limit:
        raise InvalidTweet(f"'{field}' is {len(text)} characters; the limit is {limit}", field)
    if not text.isprintable() and _CONTROL.search(text):  # control characters are unprintable
        raise InvalidTweet(f"'{field}' contains control characters", field)
    return text


def _pick(obj: Mapping[str, Any], aliases: Iterable[str], field: str) -> object:
    chosen: str | None = None
    for name in aliases:
        if name not in obj:
            continue
        if chosen is None:
            chosen = name
        elif obj[name] != obj[chosen]:
            raise InvalidTweet(f"'{chosen}' and '{name}' disagree; send one of them", field)
    if chosen is None:
        raise InvalidTweet(f"'{field}' is required", field)
    return obj[chosen]


def clean_country(value: object, accept_unknown: bool = False) -> str:
    """The canonical Spanish name of a country given in Spanish, English or a common variant;
    an unknown name is refused (InvalidTweet on `pais`) unless `accept_unknown`."""
    pais = clean_text(value, "pais", MAX_PAIS)
    found = canonical(pais)
    if found is not None:
        return found
    if accept_unknown:
        return pais
    raise InvalidTweet(
        f"'pais' {pais!r} is not a country we know; send its name in Spanish or English", "pais"
    )


def parse_fields(obj: object, accept_unknown: bool = False) -> tuple[str, str]:
    """Validate one decoded JSON value as a tweet; return (texto, pais). Other keys are ignored."""
    if not isinstance(obj, dict):
        raise InvalidTweet(f"a tweet must be a JSON object, not {_json_type(obj)}")
    usual = len(obj) == 2 and "texto" in obj and "pais" in obj  # no alias to weigh
    texto = obj["texto"] if usual else _pick(obj, TEXTO_ALIASES, "texto")
    cleaned = clean_text(texto, "texto", MAX_TEXTO)  # before pais is looked for
    pais = obj["pais"] if usual else _pick(obj, PAIS_ALIASES, "pais")
    return cleaned, clean_country(pais, accept_unknown)


def make_tweet(texto: str, pais: str, received_at: datetime | None = None) -> Tweet:
    return Tweet(new_id(), texto, pais, received_at or utcnow())


def make_tweets(pairs: Sequence[tuple[str, str]], received_at: datetime) -> list[Tweet]:
    """Tweets for validated (texto, pais) pairs, with increasing ids."""
    ids = new_ids(len(pairs))
    return [
        Tweet(id_, texto, pais, received_at) for id_, (texto, pais) in zip(ids, pairs, strict=True)
    ]


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


# Broker records ---------------------------------------------------------------------------

_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(Tweet)


def encode_record(tweet: Tweet) -> bytes:
    """The broker record value: JSON `{id, texto, pais, received_at}` (RFC 3339 time)."""
    return _record_encoder.encode(tweet)


def decode_record(value: bytes) -> Tweet:
    """Raises msgspec.DecodeError/ValidationError for a record that is not ours. A time
    written without a zone (ours always say Z) is UTC."""
    tweet = _record_decoder.decode(value)
    if tweet.received_at.tzinfo is None:
        return msgspec.structs.replace(tweet, received_at=tweet.received_at.replace(tzinfo=UTC))
    return tweet


def decode_any_record(
    value: bytes,
    position: str,
    timestamp_ms: int | None,
    now: datetime | None = None,
    accept_unknown: bool = False,
) -> Tweet:
    """Our record, or one written the way the original producer wrote it (`{"texto","pais"}`).

    The original's record has no id and no time: the id is derived from the record's position
    (`topic/partition/offset`), so a replay gets the same id, and the time is the broker's
    timestamp. Its fields are validated like any client input. Raises InvalidTweet or
    msgspec.DecodeError for a record that is not a tweet at all.
    """
    try:
        return decode_record(value)
    except msgspec.ValidationError:
        pass  # valid JSON, not our shape: perhaps the original's
    texto, pais = parse_fields(msgspec.json.decode(value), accept_unknown)
    if timestamp_ms is not None and timestamp_ms > 0:
        received = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    else:
        received = now or utcnow()
    ms = round(received.timestamp() * 1000)
    return Tweet(derived_id(position, ms), texto, pais, received)
