"""Scale-out under faults: every service on a host of its own, two of each but the gateway,
three Kafka brokers, and a network that loses hosts, links and packets (tests/netsim.py).

Each scenario asserts that nothing acknowledged is lost and nothing is counted twice, tweet by
tweet, and records what it measured in build/distributed/results.json (docs/scaling.md).
Needs root (namespaces, TUN devices) and the engines `make services` installs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.distributed import Books, Cluster, Load, drive, percentile, settle_books
from tests.engines import require_engines

pytestmark = pytest.mark.e2e

RESULTS = ROOT / "build" / "distributed" / "results.json"
ONE_SECOND = 200  # tweets: 20 batches of 10 a second, the load of most scenarios


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_engines()
    if os.geteuid() != 0:
        message = "the test hosts need root (network namespaces and TUN devices)"
        if os.environ.get("WT_REQUIRE_ENGINES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    hosts = Cluster(tmp_path_factory.mktemp("hosts"))
    try:
        hosts.start_engines()
        yield hosts
    finally:
        hosts.close()


@pytest.fixture
def services(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    cluster.start_services(request.node.name.removeprefix("test_")[:40])
    try:
        yield cluster
    finally:
        cluster.net.heal()
        cluster.net.impair()
        cluster.stop_services()
        cluster.restart_dead_brokers()


def _record(scenario: str, load: Load, books: Books, **measured: Any) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    retried = sum(1 for r in load.requests if len(r.attempts) > 1)
    results[scenario] = {
        "exact": _exact(load, books),
        **asdict(books),
        "requests": len(load.requests),
        "retried_requests": retried,
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in measured.items()},
        "events": {k: round(v, 1) for k, v in load.events.items()},
        "timeline": load.timeline(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True))


def _exact(load: Load, books: Books) -> bool:
    sent = sum(len(r.texts) for r in load.requests)
    return (
        books.acknowledged == sent
        and books.lost == books.unknown == books.countries_off == 0
        and books.archived_twice == books.counted_twice == books.not_counted == 0
        and books.marked == books.archived == books.counted
    )


def _assert_exact(load: Load, books: Books) -> None:
    """Every request acknowledged in the end; every acknowledged text archived once; the
    counters agree with the archive in total, per country, and in ids marked counted."""
    sent = sum(len(r.texts) for r in load.requests)
    assert books.acknowledged == sent, f"{sent - books.acknowledged} never acknowledged: {books}"
    assert _exact(load, books), books


def test_killing_a_counter_and_an_archiver_rebalances_exactly(services: Cluster) -> None:
    net = services.net

    def power_cut() -> None:
        net.kill_host("cnt2")
        net.kill_host("arc2")

    load = asyncio.run(drive(services, seconds=30, rate=20, events=[(10, "kill", power_cut)]))
    books = settle_books(services, load)
    recovery = load.back_in_step("kill", ONE_SECOND)
    stalled = load.longest_stall("kill")
    _record(
        "kill one of two counters and archivers",
        load,
        books,
        recovery_s=recovery,
        sinks_stalled_s=stalled,
    )
    _assert_exact(load, books)
    assert recovery is not None, "the survivors never caught up"


def test_losing_a_kafka_broker_loses_nothing_and_it_rejoins(services: Cluster) -> None:
    """The broker lost coordinates the archivers' group: they must find a new coordinator and
    rejoin while it is gone (and its partitions must get new leaders)."""
    net, topic = services.net, services.tag
    victim = services.coordinator("archiver")
    events = [
        (8, "kill", lambda: net.kill_host(victim)),
        (43, "restart", lambda: services.restart_broker(victim)),
    ]
    load = asyncio.run(drive(services, seconds=50, rate=20, events=events))
    restarted = load.started + load.events["restart"]
    deadline = time.monotonic() + 120
    while min(services.in_sync_replicas(topic)) < 3:
        assert time.monotonic() < deadline, f"{victim} did not rejoin the replicas in sync"
        time.sleep(0.5)
    rejoined = time.monotonic() - restarted
    books = settle_books(services, load)
    writes_back = load.settled("kill", until="restart")
    sinks_stalled = load.longest_stall("kill", until="restart")
    _record(
        "kill one of three Kafka brokers (the archivers' coordinator), then restart it",
        load,
        books,
        recovery_s=writes_back,
        sinks_stalled_s=sinks_stalled,
        rejoined_s=rejoined,
    )
    _assert_exact(load, books)
    down = load.events["restart"] - load.events["kill"]  # carrying on means: before it is back
    assert writes_back < down - 5, f"writes failed {writes_back:.1f}s, till the broker was back"
    assert sinks_stalled < down - 5, f"the sinks waited {sinks_stalled:.1f}s for the lost broker"


def test_a_gateway_cut_off_from_one_ingest_fails_over(services: Cluster) -> None:
    net = services.net
    dropped = net.stats()["cut"]
    load = asyncio.run(
        drive(services, seconds=25, rate=20, events=[(5, "cut", lambda: net.cut("gw", "ing1"))])
    )
    assert net.stats()["cut"] > dropped  # the partition was real: packets were dropped
    books = settle_books(services, load)
    failover = load.settled("cut")
    _record("partition the gateway from one ingest", load, books, recovery_s=failover)
    _assert_exact(load, books)
    assert failover < 10, f"requests kept failing {failover:.1f}s after the cut"


def test_a_counter_cut_off_from_redis_counts_nothing_twice(services: Cluster) -> None:
    net = services.net
    events = [(5, "cut", lambda: net.cut("cnt1", "redis")), (25, "heal", net.heal)]
    dropped = net.stats()["cut"]
    load = asyncio.run(drive(services, seconds=35, rate=20, events=events))
    assert net.stats()["cut"] > dropped
    books = settle_books(services, load)
    recovery = load.back_in_step("heal", ONE_SECOND)
    _record("partition a counter from Redis for 20 s", load, books, recovery_s=recovery)
    _assert_exact(load, books)
    assert recovery is not None, "the counter never caught up after the partition healed"


def test_latency_and_loss_everywhere_keep_the_books_exact(services: Cluster) -> None:
    net = services.net
    net.impair(delay=0.2, jitter=0.05, loss=0.02)
    load = asyncio.run(
        drive(services, seconds=60, rate=5, concurrency=128, events=[(60, "clear", net.impair)])
    )
    impaired_until = load.started + load.events["clear"]
    within = [r for r in load.requests if r.acknowledged and r.acknowledged <= impaired_until]
    throughput = sum(len(r.texts) for r in within) / load.events["clear"]
    latencies = sorted(r.acknowledged - r.started for r in within if r.acknowledged)
    switch = net.stats()
    books = settle_books(services, load)
    _record(
        "200 ms ± 50 ms and 2 % loss on every link for 60 s",
        load,
        books,
        tweets_per_s=throughput,
        p50_s=percentile(latencies, 0.5),
        p99_s=percentile(latencies, 0.99),
        packets_lost=switch["lost"],
    )
    _assert_exact(load, books)
    assert within, "nothing was acknowledged while the links were slow"
    assert switch["lost"] > 0 and percentile(latencies, 0.5) > 0.4  # the impairment was real
