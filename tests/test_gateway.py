"""The gateway's HTTP contract, in process: status codes, JSON errors, nothing changed on error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from weathertweets.backends.sqlite_counters import SqliteCounters
from weathertweets.backends.sqlite_store import SqliteStore
from weathertweets.domain import Tweet
from weathertweets.energy import EnergyModel
from weathertweets.ports import BackendUnavailable
from weathertweets.services.gateway import Gateway
from weathertweets.services.live import LiveFeed


class RecordingPublisher:
    """Stands in for ingest: keeps what it was given, or fails like an unreachable broker."""

    def __init__(self) -> None:
        self.tweets: list[Tweet] = []
        self.down = False

    async def publish(
        self, tweets: Sequence[Tweet], headers: Sequence[Mapping[str, str]] = ()
    ) -> None:
        if self.down:
            raise BackendUnavailable("broker unreachable")
        self.tweets.extend(tweets)

    async def ping(self) -> None:
        if self.down:
            raise BackendUnavailable("broker unreachable")


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def client(tmp_path: Path, publisher: RecordingPublisher) -> AsyncIterator[httpx.AsyncClient]:
    store, counters = SqliteStore(tmp_path / "s.db"), SqliteCounters(tmp_path / "c.db")
    await store.start()
    await counters.start()
    live = LiveFeed(store, counters, EnergyModel("gateway", 0.71, 4.26), 475, "test process")
    gateway = Gateway(
        publisher,
        store,
        counters,
        max_batch=100,
        live=live,
    )
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield http
    await store.close()
    await counters.close()


JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _error(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/json"
    error: dict[str, str] = response.json()["error"]
    assert error["code"] and error["message"]
    return error


@pytest.mark.parametrize("path", ["/input", "/input/", "/", "/insert", "/insert/"])
async def test_single_tweet_is_accepted_on_every_path(
    client: httpx.AsyncClient, publisher: RecordingPublisher, path: str
) -> None:
    response = await client.post(path, json={"texto": " Lluvia ", "pais": "Guatemala"})
    assert response.status_code == 202
    assert publisher.tweets[0].id == response.json()["id"]
    assert (publisher.tweets[0].texto, publisher.tweets[0].pais) == ("Lluvia", "Guatemala")


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b'{"texto": "Sol"', JSON, 400, None),
        (b'{"texto": "\xff", "pais": "Chile"}', JSON, 400, None),
        (b"", JSON, 400, None),
        (b'{"texto": "Sol", "pais": ""}', JSON, 422, "pais"),
        (b'{"texto": {"a": 1}, "pais": "Chile"}', JSON, 422, "texto"),
        (b'[{"texto": "Sol", "pais": "Chile"}]', JSON, 422, None),
        (b"<tweet><texto>Sol</texto><pais>Chile</pais></tweet>",
         {"content-type": "application/xml"}, 415, "content-type"),
        (b"texto=Sol&pais=", FORM, 422, "pais"),
        (b"texto=Sol&texto=Lluvia&pais=Chile", FORM, 422, "texto"),
        (b"texto=%FF&pais=Chile", FORM, 400, None),
        (b"texto=Sol" + b"&x=1" * 40 + b"&pais=Chile", FORM, 400, None),
        (b"--b\r\nContent-Disposition: form-data; name=\"texto\"\r\n\r\nSol\r\n--b--\r\n",
         {"content-type": "multipart/form-data; boundary=b"}, 422, "pais"),
        (b"garbage", {"content-type": "multipart/form-data"}, 400, None),
        (b"x" * (64 * 1024 + 1), JSON, 413, None),
    ],
)  # fmt: skip
async def test_bad_requests_get_json_errors_and_change_nothing(
    client: httpx.AsyncClient,
    publisher: RecordingPublisher,
    body: bytes,
    headers: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    response = await client.post("/input", content=body, headers=headers)
    assert response.status_code == status
    assert _error(response).get("field") == field
    assert publisher.tweets == []


async def test_form_and_multipart_bodies_are_tweets_like_json(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    """The original's body parser took forms too: same fields, same validation."""
    form = await client.post("/insert/", data={"texto": " Lluvia ", "pais": "Guatemala"})
    multipart = await client.post(
        "/",
        data={"texto": "Nieve", "país": "Chile", "extra": "ignored"},
        files={"attachment": ("notes.txt", b"pais=Narnia")},  # a file part carries no field
    )
    assert (form.status_code, multipart.status_code) == (202, 202)
    assert [(t.texto, t.pais) for t in publisher.tweets] == [
        ("Lluvia", "Guatemala"),
        ("Nieve", "Chile"),
    ]


async def test_the_originals_locust_get_on_the_tweet_paths_answers(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/insert/", "/input", "/"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json()["post"] == "/input"


async def test_batch_as_json_array_and_as_ndjson(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    records = [{"texto": f"Sol {i}", "pais": "Chile"} for i in range(10)]
    response = await client.post("/api/v1/tweets", json=records)
    assert (response.status_code, response.json()) == (202, {"accepted": 10})
    ndjson = "\n".join(json.dumps(r) for r in records) + "\n"
    headers = {"content-type": "application/x-ndjson"}
    response = await client.post("/api/v1/tweets", content=ndjson, headers=headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 10})
    assert len(publisher.tweets) == 20
    assert len({t.id for t in publisher.tweets}) == 20


async def test_batch_is_all_or_nothing_naming_index_and_field(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    records: list[dict[str, object]] = [{"texto": "Sol", "pais": "Chile"}] * 5
    records = [*records, {"texto": "Sol", "pais": 7}, *records]
    response = await client.post("/api/v1/tweets", json=records)
    assert response.status_code == 422
    assert _error(response)["field"] == "[5].pais"
    assert publisher.tweets == []


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ([], 422),
        ({"texto": "Sol", "pais": "Chile"}, 422),
        ([{"texto": "a", "pais": "b"}] * 101, 413),
    ],
)
async def test_batch_shape_and_size(
    client: httpx.AsyncClient, publisher: RecordingPublisher, payload: object, status: int
) -> None:
    response = await client.post("/api/v1/tweets", json=payload)
    assert response.status_code == status
    _error(response)
    assert publisher.tweets == []


async def test_broker_outage_is_503_with_retry_after_then_recovers(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    publisher.down = True
    response = await client.post("/input", json={"texto": "Sol", "pais": "Chile"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert (await client.get("/readyz")).status_code == 503
    publisher.down = False
    response = await client.post("/input", json={"texto": "Sol", "pais": "Chile"})
    assert response.status_code == 202
    assert (await client.get("/readyz")).json()["status"] == "ready"


async def test_seed_set_contract_feeds_the_stats(client: httpx.AsyncClient) -> None:
    assert (await client.post("/set", json={"Pais": "Guatemala", "Texto": "Lluvia"})).text == (
        "Data set"
    )
    assert (await client.post("/set", json={"pais": "Guatemala", "texto": "Lluvia"})).is_success
    stats = (await client.get("/api/v1/stats")).json()
    assert stats["total"] == 2
    assert stats["countries"] == {"Guatemala": 2}
    assert stats["top_texts"] == [{"texto": "Lluvia", "count": 2}]
    country = (await client.get("/api/v1/countries/Guatemala")).json()
    assert country == {"pais": "Guatemala", "total": 2, "texts": [{"texto": "Lluvia", "count": 2}]}
    assert (await client.post("/set", json={"Pais": "Guatemala"})).status_code == 422


async def test_country_names_in_paths_are_decoded(client: httpx.AsyncClient) -> None:
    await client.post("/set", json={"pais": "Turquía", "texto": "Calor"})
    response = await client.get("/api/v1/countries/Turqu%C3%ADa")
    assert response.json()["total"] == 1


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=1001", "limit=-1"])
async def test_recent_rejects_bad_limits(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/api/v1/tweets?{query}")
    assert response.status_code == 422
    assert _error(response)["field"] == "limit"


async def test_unknown_routes_and_methods_are_json(client: httpx.AsyncClient) -> None:
    assert _error(await client.get("/nope"))["code"] == "not_found"
    response = await client.delete("/input")
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"


async def test_metrics_openapi_and_docs(client: httpx.AsyncClient) -> None:
    await client.post("/input", json={"texto": "Sol", "pais": "Chile"})
    await client.post("/input", content=b"{", headers=JSON)
    metrics = (await client.get("/metrics")).text
    assert "weathertweets_tweets_accepted_total" in metrics
    assert 'weathertweets_tweets_rejected_total{reason="malformed"}' in metrics
    spec = (await client.get("/openapi.json")).json()
    assert {"/input", "/api/v1/tweets", "/api/v1/stats"} <= set(spec["paths"])
    assert "Weather Tweets API" in (await client.get("/docs")).text


async def test_browsers_get_the_page_and_clients_get_json(client: httpx.AsyncClient) -> None:
    page = await client.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*"})
    assert page.headers["content-type"].startswith("text/html")
    assert "EventSource" in (await client.get("/static/dashboard.js")).text
    assert (await client.get("/", headers={"accept": "application/json"})).json()["dashboard"]
    assert (await client.get("/")).json()["service"] == "weathertweets"  # curl, the seed's GET /
    assert (await client.get("/static/nope.js")).status_code == 404


async def test_live_snapshot_matches_the_stats(client: httpx.AsyncClient) -> None:
    await client.post("/set", json={"pais": "Turquía", "texto": "Calor sofocante"})
    await client.post("/set", json={"pais": "Narnia", "texto": "Nieve"})
    await client.post("/input", json={"pais": "Chile", "texto": "Sol"})
    snapshot = (await client.get("/api/v1/dashboard")).json()
    stats = (await client.get("/api/v1/stats")).json()
    assert snapshot["total"] == stats["total"] == 2
    assert snapshot["countries"] == stats["countries"]
    assert snapshot["map"] == {"iso": {"tr": 1}, "unknown": {"Narnia": 1}}
    assert snapshot["weather"]["Turquía"] == {"dominant": "heat", "counts": {"heat": 1}}
    assert snapshot["conditions"] == stats["conditions"] == {"heat": 1, "snow": 1}
    energy = snapshot["energy"]
    assert energy["joules"] > 0 and energy["tweets"] >= 1
    assert energy["joules_per_1000_tweets"] > 0
    assert "Cloud Carbon Footprint" in energy["model"]
