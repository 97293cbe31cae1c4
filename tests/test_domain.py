"""Validation of tweets, time-ordered ids and the broker record."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import msgspec
import pytest

from weathertweets import ids
from weathertweets.domain import (
    MAX_PAIS,
    MAX_TEXTO,
    InvalidTweet,
    decode_any_record,
    decode_record,
    encode_record,
    make_tweet,
    parse_fields,
)
from weathertweets.ids import ALPHABET, derived_id, id_time_ms, new_id, new_ids


def test_accepts_the_seed_shape() -> None:
    assert parse_fields({"texto": "Calor sofocante", "pais": "Turquía"}) == (
        "Calor sofocante",
        "Turquía",
    )


@pytest.mark.parametrize(
    "record",
    [
        {"text": "Lluvia", "country": "Guatemala"},
        {"texto": "Lluvia", "país": "Guatemala"},
        {"text": "Lluvia", "pais": "Guatemala", "country": "Guatemala"},
    ],
)
def test_accepts_aliases(record: dict[str, str]) -> None:
    assert parse_fields(record) == ("Lluvia", "Guatemala")


def test_trims_and_normalises_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "  Turquía \n")
    texto, pais = parse_fields({"texto": "\tCalor ", "pais": decomposed})
    assert (texto, pais) == ("Calor", "Turquía")
    assert unicodedata.is_normalized("NFC", pais)


def test_extra_fields_are_ignored() -> None:
    assert parse_fields({"texto": "Sol", "pais": "Chile", "user": "x", "n": 3}) == ("Sol", "Chile")


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        ({"pais": "Chile"}, "texto", "required"),
        ({"texto": "Sol"}, "pais", "required"),
        ({"texto": "", "pais": "Chile"}, "texto", "empty"),
        ({"texto": "   \t\n", "pais": "Chile"}, "texto", "empty"),
        ({"texto": "Sol", "pais": " "}, "pais", "empty"),
        ({"texto": "x" * (MAX_TEXTO + 1), "pais": "Chile"}, "texto", "limit"),
        ({"texto": "Sol", "pais": "p" * (MAX_PAIS + 1)}, "pais", "limit"),
        ({"texto": 42, "pais": "Chile"}, "texto", "a number"),
        ({"texto": None, "pais": "Chile"}, "texto", "null"),
        ({"texto": True, "pais": "Chile"}, "texto", "a boolean"),
        ({"texto": ["Sol"], "pais": "Chile"}, "texto", "an array"),
        ({"texto": {"es": "Sol"}, "pais": "Chile"}, "texto", "an object"),
        ({"texto": "Sol", "pais": {"name": "Chile"}}, "pais", "an object"),
        ({"texto": "Sol\x00", "pais": "Chile"}, "texto", "control"),
        ({"texto": "Sol", "text": "Lluvia", "pais": "Chile"}, "texto", "disagree"),
        # texto is checked before pais is looked for, whatever the shape
        ({"texto": ""}, "texto", "empty"),
        ({"text": 42}, "texto", "a number"),
        ({"texto": "Sol\x01", "pais": "a", "país": "b"}, "texto", "control"),
    ],
)
def test_rejects_with_the_field_named(record: object, field: str, words: str) -> None:
    with pytest.raises(InvalidTweet) as caught:
        parse_fields(record)
    assert caught.value.field == field
    assert words in caught.value.message


def test_limit_counts_characters_not_bytes() -> None:
    texto = "ñ" * MAX_TEXTO  # 560 bytes in UTF-8
    assert parse_fields({"texto": texto, "pais": "España"})[0] == texto


@pytest.mark.parametrize("value", [[], "Sol", 3, None])
def test_rejects_non_objects(value: object) -> None:
    with pytest.raises(InvalidTweet, match="JSON object"):
        parse_fields(value)


def test_batch_errors_name_index_and_field() -> None:
    error = InvalidTweet("'pais' is required", "pais").at(7)
    assert error.field == "[7].pais"
    assert error.index == 7
    assert "record 7" in error.message


def test_ids_are_unique_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)


@pytest.fixture
def id_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that feed ids a clock of their own leave the process's id state as it was."""
    monkeypatch.setattr(ids, "_last", ids._last)


@pytest.mark.usefixtures("id_clock")
def test_ids_increase_within_one_millisecond_and_carry_the_time() -> None:
    fixed = 1_800_000_000_000
    first, second = new_id(fixed), new_id(fixed)
    assert first < second
    assert id_time_ms(first) == fixed


@pytest.mark.usefixtures("id_clock")
def test_a_clock_going_back_never_reorders_ids() -> None:
    later = 4_000_000_000_000
    first = new_id(later)
    assert new_id(later - 5_000) > first
    assert id_time_ms(first) == later


def _value(tweet_id: str) -> int:
    value = 0
    for char in tweet_id:
        value = value * 32 + ALPHABET.index(char)
    return value


def test_a_batch_of_ids_counts_up_from_the_last_one_across_prefix_changes() -> None:
    before = new_id()
    batch = new_ids(5_000)  # crosses several 1 024-value boundaries of the shared prefix
    after = new_id()
    assert [_value(i) for i in batch] == list(range(_value(batch[0]), _value(batch[0]) + 5_000))
    assert before < batch[0] and batch[-1] < after
    assert all(len(i) == 26 for i in batch)
    assert new_ids(0) == []


@pytest.mark.usefixtures("id_clock")
def test_ids_beyond_a_milliseconds_room_carry_into_the_next() -> None:
    fixed = 1_900_000_000_000
    ids._last = (fixed << 80) | ((1 << 80) - 3)  # three values left in this millisecond
    batch = new_ids(5, fixed)
    assert [id_time_ms(i) for i in batch] == [fixed, fixed, fixed + 1, fixed + 1, fixed + 1]
    assert batch == sorted(batch) and len(set(batch)) == 5


def test_record_round_trip() -> None:
    moment = datetime(2026, 11, 29, 7, 15, 40, 408854, tzinfo=UTC)
    tweet = make_tweet("Calor sofocante", "Turquía", moment)
    raw = encode_record(tweet)
    assert b'"received_at":"2026-11-29T07:15:40.408854Z"' in raw
    assert decode_record(raw) == tweet


def test_a_record_time_without_a_zone_is_utc() -> None:
    raw = b'{"id":"01JABCDEFGHJKMNPQRSTVWXYZ0","texto":"Sol","pais":"Chile",'
    tweet = decode_record(raw + b'"received_at":"2026-01-01T12:30:00"}')
    assert tweet.received_at == datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    assert tweet.received_at.utcoffset() is not None  # every later step compares it as UTC


def test_a_record_shaped_like_the_originals_is_a_tweet_with_a_derived_id() -> None:
    """The original producer wrote `{"texto","pais"}` (Go's encoder, maybe a zero timestamp)."""
    raw = b'{"texto":" Calor ","pais":"Turqu\xc3\xada","timestamp":"0001-01-01T00:00:00Z"}'
    stamp = 1_800_000_000_123
    tweet = decode_any_record(raw, "messages/2/41", stamp)
    assert (tweet.texto, tweet.pais) == ("Calor", "Turquía")
    assert tweet.received_at == datetime.fromtimestamp(stamp / 1000, UTC)
    assert tweet.id == derived_id("messages/2/41", stamp) and len(tweet.id) == 26
    assert id_time_ms(tweet.id) == stamp
    assert decode_any_record(raw, "messages/2/41", stamp) == tweet  # a replay: the same id
    assert decode_any_record(raw, "messages/2/42", stamp).id != tweet.id


def test_our_own_records_keep_their_id_and_time() -> None:
    tweet = make_tweet("Sol", "Chile")
    assert decode_any_record(encode_record(tweet), "messages/0/1", 5) == tweet


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1, 2]", b'{"texto": "", "pais": "Chile"}', b'{"pais": "Chile"}']
)
def test_records_that_are_not_tweets_are_refused(raw: bytes) -> None:
    with pytest.raises((InvalidTweet, msgspec.DecodeError)):
        decode_any_record(raw, "messages/0/1", None)
