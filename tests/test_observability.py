"""Logs, metrics, traces and health: what an operator sees, on real processes and engines."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Pipeline, free_port
from tests.engines import RealNamespace
from weathertweets import tracing
from weathertweets.config import Settings
from weathertweets.proto import confproto_pb2, confproto_pb2_grpc
from weathertweets.runtime import SERVICES, run

pytestmark = pytest.mark.e2e
SINKS = ("archiver", "counter")


def test_json_logs_carry_the_request_and_tweet_ids(pipeline: Pipeline) -> None:
    pipeline.env = {"WT_LOG_FORMAT": "json", "WT_ACCESS_LOG": "1"}
    pipeline.start()
    answer = httpx.post(
        pipeline.url + "/input",
        json={"texto": "Niebla", "pais": "Chile"},
        headers={"x-request-id": "trace-me-42"},
    )
    assert answer.headers["x-request-id"] == "trace-me-42"
    tweet_id = answer.json()["id"]
    generated = httpx.get(pipeline.url + "/api/v1/stats").headers["x-request-id"]
    assert len(generated) == 16
    pipeline.wait_settled(1)
    assert pipeline.process is not None
    assert pipeline.process.stop() == 0
    lines = [line for line in pipeline.process.output.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in parsed)
    posted = [
        e for e in parsed if e["logger"] == "weathertweets.access" and e.get("route") == "/input"
    ]
    assert posted and posted[0]["request_id"] == "trace-me-42"
    assert posted[0]["tweet_id"] == tweet_id and posted[0]["status"] == 202
    assert any(e["message"].startswith("ready: ") for e in parsed)


def test_metrics_have_request_durations_and_grpc_calls(pipeline: Pipeline) -> None:
    pipeline.start()
    httpx.post(pipeline.url + "/input", json={"texto": "Sol", "pais": "Chile"})
    with grpc.insecure_channel(f"127.0.0.1:{pipeline.ingest_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "weathertweets.v1.TweetIngest", "confproto.getInfo"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        # `up`'s gateway publishes in-process; a gRPC client (the original's) still reaches ingest
        seed = confproto_pb2_grpc.getInfoStub(channel)
        seed.returnInfo(confproto_pb2.requestId(texto="Lluvia", pais="Perú"), timeout=5)
    pipeline.wait_settled(2)
    observed = [f'weathertweets_end_to_end_seconds_count{{group="{g}"}} 2.0' for g in SINKS]
    deadline = time.monotonic() + 10  # observed just after each sink's commit
    while time.monotonic() < deadline:
        metrics = httpx.get(pipeline.url + "/metrics").text
        if all(line in metrics for line in observed):
            break
        time.sleep(0.2)
    for line in observed:  # each tweet's end-to-end time, once per sink
        assert line in metrics
    assert (
        'weathertweets_http_request_duration_seconds_bucket{le="0.005",route="/input",service="gateway"}'
        in metrics
    )
    assert 'weathertweets_grpc_server_handled_total{code="OK",method="returnInfo"}' in metrics
    assert 'weathertweets_grpc_server_handled_total{code="OK",method="Check"}' in metrics


async def test_one_trace_spans_gateway_ingest_archiver_and_counter_on_real_kafka(
    tmp_path: Path,
) -> None:
    """All four services in this process (as `up` runs them), on real Kafka, MongoDB and
    Redis; the context crosses HTTP, ingest's publishing step and the Kafka record's headers."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    namespace = RealNamespace.fresh()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings.from_env(
        {**namespace.env, "WT_DATA_DIR": str(tmp_path), "WT_ACCESS_LOG": "0"}
    )
    settings.port, settings.ingest_port = free_port(), free_port()
    settings.resolve()
    stopping = asyncio.Event()
    tracing.enable(provider)
    try:
        service = asyncio.create_task(
            run(settings, list(SERVICES), announce=lambda _: None, stopping=stopping)
        )
        url = f"http://127.0.0.1:{settings.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for _ in range(300):
                if service.done():
                    service.result()
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            answer = await http.post(
                "/input",
                json={"texto": "Tormenta", "pais": "Chile"},
                headers={"traceparent": parent},
            )
            assert answer.status_code == 202
            tweet_id = answer.json()["id"]
            for _ in range(300):
                stats = (await http.get("/api/v1/stats")).json()
                if stats["total"] == stats["archived"] == 1:
                    break
                await asyncio.sleep(0.1)
        stopping.set()
        await service
    finally:
        tracing.disable()
    spans = [s for s in exporter.get_finished_spans() if s.context is not None]
    ours = [s for s in spans if s.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)]
    services = {str(s.attributes.get("weathertweets.service")) for s in ours if s.attributes}
    assert services == {"gateway", "ingest", "archiver", "counter"}, [s.name for s in spans]
    by_id = {s.context.span_id: s for s in ours}
    for span in ours:  # one tree: every span but the gateway's hangs off another of ours
        if span.attributes and span.attributes.get("weathertweets.service") != "gateway":
            assert span.parent is not None and span.parent.span_id in by_id, span.name
    consumers = [s for s in ours if s.attributes and s.attributes.get("tweet_id") == tweet_id]
    assert len(consumers) >= 3  # ingest, archiver, counter name the tweet
