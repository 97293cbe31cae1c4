"""Safe to expose, in process: keys, Idempotency-Keys, rate limits, bounded inputs, trusted ids.

The same scenarios against real processes and engines are in test_abuse.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from tests.test_gateway import RecordingPublisher
from weathertweets.access import Access, RateLimiter
from weathertweets.backends.sqlite_counters import SqliteCounters
from weathertweets.backends.sqlite_idempotency import SqliteIdempotency
from weathertweets.backends.sqlite_store import SqliteStore
from weathertweets.domain import InvalidTweet, Tweet, make_tweet
from weathertweets.proto import ingest_pb2
from weathertweets.rpc_codec import count_field, from_pb, to_pb, unique_ids
from weathertweets.services.gateway import Gateway
from weathertweets.services.writes import OutcomeUnknown, WriteGuard

KEY = "k1-0123456789abcdef"
WRITE = {"authorization": f"Bearer {KEY}"}


class FlakyPublisher(RecordingPublisher):
    """Records every publish; fails the first `ambiguous` ones after recording them, as a
    broker that stored the tweets but whose answer was lost."""

    def __init__(self, ambiguous: int = 0) -> None:
        super().__init__()
        self.calls: list[list[Tweet]] = []
        self.ambiguous = ambiguous

    async def publish(
        self, tweets: Sequence[Tweet], headers: Sequence[Mapping[str, str]] = ()
    ) -> None:
        self.calls.append(list(tweets))
        await super().publish(tweets, headers)
        if len(self.calls) <= self.ambiguous:
            raise OutcomeUnknown("ingest: DEADLINE_EXCEEDED")


async def _gateway(
    tmp_path: Path,
    publisher: RecordingPublisher,
    *,
    read_keys: frozenset[str] = frozenset(),
    rate: float = 0,
    max_concurrent: int = 1000,
) -> Gateway:
    store, counters = SqliteStore(tmp_path / "s.db"), SqliteCounters(tmp_path / "c.db")
    keys = SqliteIdempotency(tmp_path / "c.db")
    for backend in (store, counters, keys):
        await backend.start()
    guard = WriteGuard(Access(frozenset({KEY}), read_keys), RateLimiter(rate), keys)
    return Gateway(
        publisher, store, counters, guard=guard, max_batch=100, max_concurrent=max_concurrent
    )


@pytest.fixture
async def publisher() -> FlakyPublisher:
    return FlakyPublisher()


@pytest.fixture
async def http(tmp_path: Path, publisher: FlakyPublisher) -> AsyncIterator[httpx.AsyncClient]:
    gateway = await _gateway(tmp_path, publisher)
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


async def test_writes_need_a_key_and_reads_stay_public(
    http: httpx.AsyncClient, publisher: FlakyPublisher
) -> None:
    tweet = {"texto": "Sol", "pais": "Chile"}
    missing = await http.post("/input", json=tweet)
    assert missing.status_code == 401 and missing.json()["error"]["field"] == "authorization"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await http.post("/input", json=tweet, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert (await http.post("/set", json=tweet)).status_code == 401
    assert (await http.post("/api/v1/tweets", json=[tweet])).status_code == 401
    assert publisher.tweets == []
    assert (await http.post("/input", json=tweet, headers=WRITE)).status_code == 202
    assert (await http.get("/api/v1/stats")).status_code == 200


async def test_read_keys_close_the_reads(tmp_path: Path) -> None:
    gateway = await _gateway(tmp_path, RecordingPublisher(), read_keys=frozenset({"r1"}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw"
    ) as http:
        assert (await http.get("/api/v1/stats")).status_code == 401
        reader = {"authorization": "Bearer r1"}
        assert (await http.get("/api/v1/stats", headers=reader)).status_code == 200
        assert (await http.get("/api/v1/stats", headers=WRITE)).status_code == 200
        assert (await http.get("/healthz")).status_code == 200  # probes stay open


async def test_the_same_key_twice_publishes_once_and_answers_the_same(
    http: httpx.AsyncClient, publisher: FlakyPublisher
) -> None:
    headers = {**WRITE, "idempotency-key": "order-42"}
    first = await http.post("/input", json={"texto": "Sol", "pais": "Chile"}, headers=headers)
    again = await http.post("/input", json={"texto": "Sol", "pais": "Chile"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert len(publisher.calls) == 1 and publisher.tweets[0].keyed
    other = await http.post("/input", json={"texto": "Niebla", "pais": "Chile"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    someone_else = {"authorization": "Bearer other", "idempotency-key": "order-42"}
    assert (
        await http.post("/input", json={"texto": "x", "pais": "Perú"}, headers=someone_else)
    ).status_code == 403


async def test_an_ambiguous_failure_is_said_and_its_retry_republishes_the_same_tweets(
    tmp_path: Path,
) -> None:
    publisher = FlakyPublisher(ambiguous=1)
    gateway = await _gateway(tmp_path, publisher)
    batch = [{"texto": "Sol", "pais": "Chile"}, {"texto": "Lluvia", "pais": "Guatemala"}]
    headers = {**WRITE, "idempotency-key": "batch-7"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw"
    ) as http:
        unknown = await http.post("/api/v1/tweets", json=batch, headers=headers)
        retried = await http.post("/api/v1/tweets", json=batch, headers=headers)
    assert unknown.status_code == 503 and unknown.headers["retry-after"] == "1"
    assert unknown.json()["error"]["code"] == "outcome_unknown"
    assert retried.status_code == 202 and retried.json() == {"accepted": 2}
    first, second = publisher.calls
    assert [t.id for t in first] == [t.id for t in second]  # the sinks keep one of each
    assert [t.received_at for t in first] == [t.received_at for t in second]


async def test_without_a_key_a_retry_is_a_new_tweet(
    http: httpx.AsyncClient, publisher: FlakyPublisher
) -> None:
    for _ in range(2):
        await http.post("/input", json={"texto": "Sol", "pais": "Chile"}, headers=WRITE)
    assert len({t.id for t in publisher.tweets}) == 2 and not publisher.tweets[0].keyed


@pytest.mark.parametrize("key", [b"", b"x" * 256, b"with space", "ñ".encode()])
async def test_a_malformed_idempotency_key_is_400(http: httpx.AsyncClient, key: bytes) -> None:
    answer = await http.post(
        "/input",
        json={"texto": "Sol", "pais": "Chile"},
        headers=[(b"authorization", f"Bearer {KEY}".encode()), (b"idempotency-key", key)],
    )
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "idempotency-key"


async def test_set_with_a_key_counts_once(tmp_path: Path) -> None:
    gateway = await _gateway(tmp_path, RecordingPublisher())
    headers = {**WRITE, "idempotency-key": "set-1"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw"
    ) as http:
        for _ in range(3):
            answer = await http.post(
                "/set", json={"Pais": "Chile", "Texto": "Sol"}, headers=headers
            )
            assert answer.status_code == 200
        stats = (await http.get("/api/v1/stats")).json()
    assert stats["total"] == 1


async def test_the_rate_limit_is_per_caller_with_retry_after(tmp_path: Path) -> None:
    gateway = await _gateway(tmp_path, RecordingPublisher(), rate=2)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw"
    ) as http:
        answers = [
            await http.post("/input", json={"texto": "Sol", "pais": "Chile"}, headers=WRITE)
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert int(answers[2].headers["retry-after"]) >= 1
    assert answers[2].json()["error"]["code"] == "rate_limited"


async def test_deep_json_is_400_not_500(http: httpx.AsyncClient) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    for path in ("/input", "/api/v1/tweets", "/set"):
        answer = await http.post(
            path, content=deep, headers={**WRITE, "content-type": "application/json"}
        )
        assert answer.status_code == 400, path
        assert "nested too deeply" in answer.json()["error"]["message"]


async def test_past_the_concurrency_cap_requests_are_shed(tmp_path: Path) -> None:
    release = asyncio.Event()

    class Slow(RecordingPublisher):
        async def publish(
            self, tweets: Sequence[Tweet], headers: Sequence[Mapping[str, str]] = ()
        ) -> None:
            await release.wait()

    gateway = await _gateway(tmp_path, Slow(), max_concurrent=2)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw"
    ) as http:

        async def post() -> httpx.Response:
            return await http.post("/input", json={"texto": "Sol", "pais": "Chile"}, headers=WRITE)

        waiting = [asyncio.create_task(post()) for _ in range(2)]
        await asyncio.sleep(0.05)
        shed = await post()
        release.set()
        done = await asyncio.gather(*waiting)
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
    assert [d.status_code for d in done] == [202, 202]


def test_only_a_trusted_caller_sets_ids_and_times() -> None:
    tweet = make_tweet("Sol", "Chile")
    message = to_pb(tweet)
    with pytest.raises(InvalidTweet, match="only the gateway"):
        from_pb(message, trusted=False)
    assert from_pb(message, trusted=True).id == tweet.id
    anonymous = from_pb(ingest_pb2.Tweet(texto="Sol", pais="Chile"), trusted=False)
    assert len(anonymous.id) == 26


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"received_at_us": 2**63 - 1}, "received_at_us"),
        ({"received_at_us": 1}, "received_at_us"),
        ({"id": "not-an-id"}, "id"),
        ({"id": "ZZZZZZZZZZZZZZZZZZZZZZZZZZ"}, "id"),
    ],
)
def test_ids_and_times_outside_reason_are_refused(change: dict[str, object], field: str) -> None:
    message = to_pb(make_tweet("Sol", "Chile"))
    for name, value in change.items():
        setattr(message, name, value)
    with pytest.raises(InvalidTweet) as refused:
        from_pb(message, trusted=True)
    assert refused.value.field == field


def test_a_batch_repeating_an_id_is_refused() -> None:
    tweet = make_tweet("Sol", "Chile")
    with pytest.raises(InvalidTweet, match="repeats"):
        unique_ids([tweet, tweet])


def test_batch_size_is_read_from_the_wire_before_decoding() -> None:
    batch = ingest_pb2.TweetBatch(tweets=[ingest_pb2.Tweet(texto="a", pais="b")] * 1234)
    assert count_field(batch.SerializeToString(), 1) == 1234
    with pytest.raises(ValueError):
        count_field(b"\xff\xff\xff", 1)


def test_the_live_snapshot_lists_at_most_the_top_countries() -> None:
    from weathertweets.services.live import MAX_COUNTRIES, OTHERS, _bounded

    many = {f"country {i}": 1000 - i for i in range(400)}  # sorted, largest first
    kept = _bounded(many)
    assert len(kept) == MAX_COUNTRIES + 1
    assert kept[OTHERS] == sum(1000 - i for i in range(MAX_COUNTRIES, 400))
    assert sum(kept.values()) == sum(many.values())


async def test_texts_per_country_are_capped_to_the_most_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Junk texts cannot grow the counters without bound: the least counted are dropped, the
    country's total stays exact."""
    import weathertweets.backends.sqlite_counters as module
    from weathertweets.ports import CountedTweet

    monkeypatch.setattr("secrets.randbelow", lambda _: 0)  # prune on every batch
    counters = module.SqliteCounters(tmp_path / "c.db", text_cap=3)
    await counters.start()
    popular = [CountedTweet(0, i, "Chile", "Sol") for i in range(5)]
    junk = [CountedTweet(0, 10 + i, "Chile", f"junk {i}") for i in range(50)]
    await counters.apply("counter", popular + junk)
    texts, stats = await counters.country("Chile"), await counters.stats()
    await counters.close()
    assert len(texts) == 3 and texts["Sol"] == 5
    assert stats.countries["Chile"] == 55 and stats.total == 55


async def test_odd_digits_in_a_query_are_422_not_500(http: httpx.AsyncClient) -> None:
    for query in ("top=%C2%B2", "top=\xb2"):
        answer = await http.get(f"/api/v1/stats?{query}")
        assert answer.status_code == 422, query


async def test_set_with_a_key_replays_its_first_answer(tmp_path: Path) -> None:
    gateway = await _gateway(tmp_path, RecordingPublisher())
    headers = {**WRITE, "idempotency-key": "set-replay"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw"
    ) as http:
        first = await http.post("/set", json={"Pais": "Chile", "Texto": "Sol"}, headers=headers)
        again = await http.post("/set", json={"Pais": "Chile", "Texto": "Sol"}, headers=headers)
    assert first.text == again.text == "Data set"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"


def test_batch_counting_stops_early_and_refuses_other_fields() -> None:
    batch = ingest_pb2.TweetBatch(tweets=[ingest_pb2.Tweet(texto="a", pais="b")] * 50)
    assert count_field(batch.SerializeToString(), 1, stop_after=10) == 11
    with pytest.raises(ValueError, match="unexpected field"):
        count_field(b"\x10\x00" * 100, 1)  # field 2 varints, not tweets
