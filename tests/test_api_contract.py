"""The typed API: the OpenAPI document is valid and complete, real answers match it, and the
client library round-trips every call (in process here; against a real `up` in test_e2e)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec

from tests.test_gateway import RecordingPublisher
from weathertweets import schemas
from weathertweets.backends.sqlite_counters import SqliteCounters
from weathertweets.backends.sqlite_store import SqliteStore
from weathertweets.client import ApiError, AsyncClient, Client, Retries
from weathertweets.domain import make_tweet, utcnow
from weathertweets.energy import EnergyModel
from weathertweets.openapi import OPERATIONS, openapi_spec
from weathertweets.ports import ArchivedTweet
from weathertweets.services.gateway import INTERNAL_PATHS, Gateway
from weathertweets.services.live import LiveFeed


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    store, counters = SqliteStore(tmp_path / "s.db"), SqliteCounters(tmp_path / "c.db")
    await store.start()
    await counters.start()
    live = LiveFeed(store, counters, EnergyModel("gateway", 0.71, 4.26), 475, "test")
    await counters.increment("Chile", "Sol radiante", "clear")
    tweet = make_tweet("Sol radiante", "Chile")
    await store.archive([ArchivedTweet(tweet, utcnow())])
    yield Gateway(RecordingPublisher(), store, counters, max_batch=100, live=live)
    await store.close()
    await counters.close()


def test_the_document_is_valid_openapi_with_a_schema_for_every_success() -> None:
    spec = openapi_spec()
    validate_spec(spec)  # raises on an invalid document
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            successes = [s for s in operation["responses"] if s.startswith("2")]
            assert successes, (method, path)
            for status in successes:
                content = operation["responses"][status]["content"]
                assert all("schema" in media for media in content.values()), (method, path)


def test_the_document_describes_every_route_the_gateway_serves(gateway: Gateway) -> None:
    described = {op.path for op in OPERATIONS}
    served = gateway.router.paths()
    prefixes = {
        "/static/": "internal asset files",
        "/api/v1/countries/": "/api/v1/countries/{pais}",
    }
    for path in served - described - set(prefixes):
        pytest.fail(f"{path} is served but not in the OpenAPI document")
    assert described >= INTERNAL_PATHS


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "components": spec["components"]})


class GeneratedClient:
    """A client made at run time from the served /openapi.json alone: one call per
    operationId, its request built from the document (path parameters, the body's example)."""

    def __init__(self, http: httpx.AsyncClient, spec: dict[str, Any]) -> None:
        self.http, self.spec = http, spec
        self.operations = {
            op["operationId"]: (method, path, op)
            for path, methods in spec["paths"].items()
            for method, op in methods.items()
        }

    async def call(self, operation_id: str) -> httpx.Response:
        method, path, op = self.operations[operation_id]
        for parameter in op["parameters"]:
            if parameter["in"] == "path":
                path = path.replace("{" + parameter["name"] + "}", "Chile")
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        json_body = body["schema"].get("example") if body else None
        if body and json_body is None and body["schema"].get("type") == "array":
            json_body = [body["schema"]["items"]["example"]]
        headers = {"accept": "application/json"}
        return await self.http.request(method.upper(), path, json=json_body, headers=headers)

    def check(self, operation_id: str, answer: httpx.Response) -> None:
        _, _, op = self.operations[operation_id]
        documented = op["responses"][str(answer.status_code)]
        schema = documented["content"]["application/json"]["schema"]
        _validator(self.spec, schema).validate(answer.json())


async def test_a_client_generated_from_the_document_round_trips(gateway: Gateway) -> None:
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        spec = (await http.get("/openapi.json")).json()
        client = GeneratedClient(http, spec)
        checked = []
        for operation_id, (_, _, op) in client.operations.items():
            success = next(s for s in op["responses"] if s.startswith("2"))
            if "application/json" not in op["responses"][success]["content"]:
                continue  # text, HTML and event streams: not JSON bodies
            if operation_id == "get_openapi_json":
                continue
            answer = await client.call(operation_id)
            assert answer.status_code == int(success), (operation_id, answer.text)
            client.check(operation_id, answer)
            checked.append(operation_id)
        refused = await http.post("/input", json={"texto": "", "pais": "Chile"})
        client.check("post_input", refused)  # errors match their schema too
    assert {"post_input", "post_api_v1_tweets", "get_api_v1_stats"} <= set(checked)
    assert len(checked) >= 14


async def test_the_async_client_round_trips_every_call(gateway: Gateway) -> None:
    transport = httpx.ASGITransport(app=gateway.app)
    async with AsyncClient("http://gw", transport=transport) as client:
        assert len(await client.publish("Lluvia", "Guatemala")) == 26
        assert (
            await client.publish_batch([("Sol", "Chile"), {"texto": "Nieve", "pais": "Perú"}]) == 2
        )
        stats = await client.stats()
        assert isinstance(stats, schemas.Stats) and stats.countries == {"Chile": 1}
        country = await client.country("Chile")
        assert country.texts == [schemas.TextCount(texto="Sol radiante", count=1)]
        recent = await client.recent(pais="Chile")
        assert [t.texto for t in recent] == ["Sol radiante"]
        assert (await client.conditions()).countries["Chile"].dominant == "clear"
        with pytest.raises(ApiError) as refused:
            await client.publish("", "Chile")
    assert (refused.value.status, refused.value.field) == (422, "texto")
    publisher = gateway._ingest
    assert isinstance(publisher, RecordingPublisher)
    assert [t.texto for t in publisher.tweets] == ["Lluvia", "Sol", "Nieve"]


def test_writes_carry_a_key_and_503_is_retried_with_the_same_key_after_retry_after() -> None:
    seen: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            body = {"error": {"code": "unavailable", "message": "broker busy"}}
            return httpx.Response(503, json=body, headers={"retry-after": "0"})
        return httpx.Response(202, json={"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})

    retries = Retries(attempts=4, first_wait=0.001, max_wait=0.01)
    with Client(
        "http://gw", api_key="k1", retries=retries, transport=httpx.MockTransport(gateway)
    ) as client:
        assert client.publish("Sol", "Chile") == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1  # one key for every attempt of one write
    assert all(r.headers["authorization"] == "Bearer k1" for r in seen)


def test_retries_give_up_with_the_servers_error() -> None:
    def busy(_: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "rate_limited", "message": "slow down"}}
        return httpx.Response(429, json=body, headers={"retry-after": "0"})

    retries = Retries(attempts=2, first_wait=0.001, max_wait=0.01)
    transport = httpx.MockTransport(busy)
    with (
        Client("http://gw", retries=retries, transport=transport) as client,
        pytest.raises(ApiError) as gave_up,
    ):
        client.stats()
    assert (gave_up.value.status, gave_up.value.code) == (429, "rate_limited")


def test_a_retry_after_in_the_answer_is_honoured() -> None:
    assert Retries(first_wait=0.1).wait(0, "3") == 3.0
    assert Retries(first_wait=0.1, max_wait=0.2).wait(5, None) <= 0.2
