"""The pipeline over Kafka, MongoDB (wire) and Redis, as separate processes, with Prometheus."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from redis import Redis

from tests.conftest import ServiceProcess, free_port
from tests.dashboard_queries import PromQuery, RedisQuery, all_queries
from tests.engines import RealNamespace, require_engines
from tests.private_engines import PrivateRedis
from weathertweets.gendata import generate
from weathertweets.loadgen import run_load

pytestmark = pytest.mark.e2e
DEFERRED_METRIC = "weathertweets_consumer_deferred_seconds_total"


def _ports() -> dict[str, str]:
    return {
        "WT_PORT": str(free_port()),
        "WT_INGEST_PORT": str(free_port()),
        "WT_INGEST_METRICS_PORT": str(free_port()),
        "WT_ARCHIVER_PORT": str(free_port()),
        "WT_COUNTER_PORT": str(free_port()),
    }


def _send(url: str, records: list[dict[str, str]], batch: int) -> int:
    outcome = asyncio.run(
        run_load(url, records, total=len(records), concurrency=16, rate=0, batch=batch)
    )
    assert (outcome.rejected, outcome.errors) == (0, 0), outcome.statuses
    return outcome.accepted


def _prometheus_query(base: str, query: str) -> list[dict[str, object]]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, object]] = response.json()["data"]["result"]
    return result


def test_stack_on_real_engines_is_exact_and_scraped(tmp_path: Path) -> None:
    namespace = RealNamespace.fresh()
    env = {**namespace.env, **_ports(), "WT_DATA_DIR": str(tmp_path)}
    stack = ServiceProcess(["stack"], tmp_path / "stack.log", env).start()
    gateway = f"http://127.0.0.1:{env['WT_PORT']}"
    try:
        stack.wait_ready(gateway + "/readyz", timeout=90)
        deadline = time.monotonic() + 60
        while "stack ready" not in stack.output and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "stack ready" in stack.output
        # On Kafka the sinks run at nice 10 and in the idle class, every thread of them.
        assert stack.proc is not None
        own = os.getpriority(os.PRIO_PROCESS, 0)
        own_policy = os.sched_getscheduler(0)
        children = {
            int(pid): Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode()
            for pid in Path(f"/proc/{stack.proc.pid}/task/{stack.proc.pid}/children")
            .read_text()
            .split()
        }
        for pid, service in children.items():
            sink = service in ("archiver", "counter")
            expected = (max(own, 10), os.SCHED_IDLE) if sink else (own, own_policy)
            for task in Path(f"/proc/{pid}/task").iterdir():
                stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
                assert (service, int(stat[16]), int(stat[38])) == (service, *expected)
        records = generate(20_000, seed=21)
        accepted = _send(gateway, records[:5000], batch=0)
        accepted += _send(gateway, records[5000:], batch=500)
        assert accepted == 20_000
        countries = namespace.wait_exact(20_000)
        assert countries == dict(Counter(r["pais"] for r in records))
        # What the stack sends its sinks while the intake is busy holds them, never kills them.
        archiver = next(pid for pid, service in children.items() if service == "archiver")
        held_before = _metric(int(env["WT_ARCHIVER_PORT"]), DEFERRED_METRIC)  # the stack's own
        deadline = time.monotonic() + 30
        while _metric(int(env["WT_ARCHIVER_PORT"]), DEFERRED_METRIC) == held_before:
            os.kill(archiver, signal.SIGUSR1)
            assert time.monotonic() < deadline, "the archiver never deferred"
            time.sleep(0.2)
        os.kill(archiver, signal.SIGUSR2)
        assert _send(gateway, records[:10], batch=0) == 10
        assert namespace.wait_exact(20_010)

        prometheus = require_engines()["WT_PROMETHEUS_URL"]
        ports = {env[k] for k in ("WT_PORT", "WT_INGEST_METRICS_PORT", "WT_ARCHIVER_PORT")}
        ports.add(env["WT_COUNTER_PORT"])
        deadline = time.monotonic() + 60
        while True:
            up = _prometheus_query(prometheus, 'up{job="weathertweets"} == 1')
            scraped = {str(r["metric"]["instance"]).rsplit(":", 1)[1] for r in up}  # type: ignore[index]
            processed = _prometheus_query(
                prometheus, 'sum(weathertweets_records_processed_total{group="archiver"})'
            )
            done = processed and float(processed[0]["value"][1]) >= 20_000  # type: ignore[index]
            if ports <= scraped and done:
                break
            assert time.monotonic() < deadline, f"Prometheus saw {scraped}, {processed}"
            time.sleep(1)
        for body in (b"{", b'{"texto": ""}', b"[]"):  # for the rejections panel
            httpx.post(
                gateway + "/input", content=body, headers={"content-type": "application/json"}
            )
        _run_every_dashboard_query(namespace, prometheus, top_country=countries)
    finally:
        code = stack.stop(timeout=90)
    assert code == 0, stack.output[-2000:]
    assert "exited (0)" in stack.output


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_stack_replicas_share_the_work_and_stay_exact(tmp_path: Path) -> None:
    """Two of each service: both gateways take tweets, both ingests publish, each group's two
    members share the partitions, and every tweet is archived and counted once."""
    namespace = RealNamespace.fresh()
    env = {**namespace.env, **_ports(), "WT_DATA_DIR": str(tmp_path)}
    replicas = ["--replicas", "gateway=2,ingest=2,archiver=2,counter=2"]
    stack = ServiceProcess(["stack", *replicas], tmp_path / "stack.log", env).start()
    names = ("", "INGEST_METRICS_", "ARCHIVER_", "COUNTER_")
    port = {name: int(env[f"WT_{name}PORT"]) for name in names}
    try:
        deadline = time.monotonic() + 120
        while "stack ready" not in stack.output:
            assert time.monotonic() < deadline and "did not become ready" not in stack.output
            time.sleep(0.2)
        assert "gateway-2" in stack.output and "counter-2" in stack.output
        records = generate(6000, seed=5)
        gateways = [f"http://127.0.0.1:{port['']}", f"http://127.0.0.1:{port[''] + 100}"]
        accepted = _send(gateways[0], records[:3000], batch=0)
        accepted += _send(gateways[1], records[3000:], batch=0)
        assert accepted == 6000
        countries = namespace.wait_exact(6000)
        assert countries == dict(Counter(r["pais"] for r in records))
        published = [
            _metric(port["INGEST_METRICS_"] + step, "weathertweets_tweets_published_total")
            for step in (0, 100)
        ]
        assert sum(published) == 6000 and min(published) > 0, published
        for group in ("ARCHIVER_", "COUNTER_"):  # each member had partitions, and did work
            processed = [
                _metric(port[group] + step, "weathertweets_records_processed_total")
                for step in (0, 100)
            ]
            assert sum(processed) >= 6000 and min(processed) > 0, (group, processed)
    finally:
        code = stack.stop(timeout=90)
    assert code == 0, stack.output[-2000:]


def _run_every_dashboard_query(
    namespace: RealNamespace, prometheus: str, top_country: dict[str, int]
) -> None:
    """Each Redis command and PromQL expression of the dashboards returns data."""
    pais = max(top_country, key=lambda name: top_country[name])
    substitutions = {
        "${prefix}": namespace.env["WT_COUNTER_PREFIX"],
        "$pais": pais,
        "$__rate_interval": "1m",
        "$namespace": "project",
    }

    def fill(text: str) -> str:
        for variable, value in substitutions.items():
            text = text.replace(variable, value)
        return text

    queries = all_queries()
    assert sum(isinstance(q, RedisQuery) for q in queries) >= 8
    assert sum(isinstance(q, PromQuery) for q in queries) >= 12
    with Redis.from_url(namespace.env["WT_COUNTER_URL"], decode_responses=True) as redis:
        for query in queries:
            if isinstance(query, RedisQuery):
                answer = redis.execute_command(*(fill(arg) for arg in query.args))
                assert answer, f"{query.where}: {query.args} returned {answer!r}"
    deadline = time.monotonic() + 60
    pending = [q for q in queries if isinstance(q, PromQuery)]
    while pending:  # rates need two scrapes after the load: give them time
        pending = [q for q in pending if not _prometheus_query(prometheus, fill(q.expr))]
        if pending and time.monotonic() > deadline:
            raise AssertionError("no data: " + "; ".join(f"{q.where}: {q.expr}" for q in pending))
        time.sleep(2 if pending else 0)


def test_killing_the_consumers_mid_stream_keeps_counts_exact(tmp_path: Path) -> None:
    namespace = RealNamespace.fresh()
    env = {**namespace.env, **_ports(), "WT_DATA_DIR": str(tmp_path)}
    ports = {"ingest": "WT_INGEST_METRICS_PORT", "archiver": "WT_ARCHIVER_PORT"}
    ports |= {"counter": "WT_COUNTER_PORT", "gateway": "WT_PORT"}
    services: dict[str, ServiceProcess] = {}

    def start(name: str) -> None:
        log = tmp_path / f"{name}-{time.monotonic_ns()}.log"
        services[name] = ServiceProcess(["serve", name], log, env).start()
        services[name].wait_ready(f"http://127.0.0.1:{env[ports[name]]}/readyz", timeout=90)

    for name in ("ingest", "archiver", "counter", "gateway"):
        start(name)
    gateway = f"http://127.0.0.1:{env['WT_PORT']}"
    records = generate(12_000, seed=31)
    try:
        accepted = _send(gateway, records[:4000], batch=0)
        services["archiver"].kill()  # SIGKILL, mid-stream: the broker holds the backlog
        services["counter"].kill()
        accepted += _send(gateway, records[4000:8000], batch=100)
        start("archiver")
        start("counter")
        accepted += _send(gateway, records[8000:], batch=0)
        services["archiver"].kill()  # and once more while they catch up
        start("archiver")
        assert accepted == 12_000
        countries = namespace.wait_exact(12_000)
        assert countries == dict(Counter(r["pais"] for r in records))
    finally:
        for service in services.values():
            service.stop(timeout=60)


def test_up_accepts_real_engine_urls(tmp_path: Path) -> None:
    namespace = RealNamespace.fresh()
    env = {**namespace.env, **_ports()}
    up = ServiceProcess(["up", "--data-dir", str(tmp_path)], tmp_path / "up.log", env).start()
    gateway = f"http://127.0.0.1:{env['WT_PORT']}"
    try:
        up.wait_ready(gateway + "/readyz", timeout=90)
        assert _send(gateway, generate(500, seed=41), batch=0) == 500
        namespace.wait_exact(500)
        stats = httpx.get(gateway + "/api/v1/stats").json()
        assert stats["total"] == stats["archived"] == 500
        recent = httpx.get(gateway + "/api/v1/tweets", params={"limit": 5}).json()["tweets"]
        assert len(recent) == 5
        assert recent == sorted(recent, key=lambda t: t["received_at"], reverse=True)
    finally:
        assert up.stop(timeout=60) == 0
    assert not (tmp_path / "broker.db").exists()  # nothing fell back to the embedded files


def test_a_redis_outage_is_503_then_recovers_with_nothing_lost(tmp_path: Path) -> None:
    """Redis goes away: tweets sent without an Idempotency-Key are still accepted (Kafka holds
    them); keyed writes and reads answer 503 with Retry-After (the keys live in Redis); the
    counter retries. Redis comes back: the counts catch up, exactly."""
    redis = PrivateRedis(tmp_path)
    redis.start()
    namespace = RealNamespace.fresh()
    namespace = RealNamespace({**namespace.env, "WT_COUNTER_URL": redis.url}, namespace.tag)
    env = {**namespace.env, **_ports()}
    up = ServiceProcess(["up", "--data-dir", str(tmp_path)], tmp_path / "up.log", env).start()
    gateway = f"http://127.0.0.1:{env['WT_PORT']}"
    records = generate(3000, seed=51)
    try:
        up.wait_ready(gateway + "/readyz", timeout=90)
        accepted = _send(gateway, records[:1500], batch=0)
        namespace.wait_exact(1500)
        redis.kill()
        with httpx.Client(base_url=gateway, timeout=30) as http:
            for start in range(1500, 3000, 100):  # no key: the broker alone decides
                answer = http.post("/api/v1/tweets", json=records[start : start + 100])
                assert answer.status_code == 202, answer.text
                accepted += 100
            keyed = http.post(
                "/input", json=records[0], headers={"idempotency-key": "during-the-outage"}
            )
            assert keyed.status_code == 503 and keyed.json()["error"]["code"] == "unavailable"
            stats = http.get("/api/v1/stats")
            assert stats.status_code == 503 and stats.headers["retry-after"] == "1"
            assert stats.json()["error"]["code"] == "unavailable"
            assert http.get("/readyz").status_code == 503
        redis.start()
        assert accepted == 3000
        countries = namespace.wait_exact(3000)
        assert countries == dict(Counter(r["pais"] for r in records))
        assert httpx.get(gateway + "/readyz", timeout=30).status_code == 200
    finally:
        assert up.stop(timeout=60) == 0
        redis.kill()
