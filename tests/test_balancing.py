"""The gateway spreads its gRPC calls over every ingest replica behind one name.

Two `serve ingest` processes listen on one port at two loopback addresses; a small DNS server
answers the name with both, as a Kubernetes headless Service does; the gateway is given
`dns://<that server>/<name>:<port>`.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServiceProcess, free_port
from tests.dns import DnsServer
from weathertweets.gendata import generate
from weathertweets.loadgen import Outcome, run_load

pytestmark = pytest.mark.e2e

ADDRESSES = ("127.0.0.1", "127.0.0.2")


def _published(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=5).text
    found = re.search(r"^weathertweets_tweets_published_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_calls_are_spread_and_survive_losing_a_replica(tmp_path: Path) -> None:
    grpc_port, gateway_port = free_port(), free_port()
    metrics_ports = [free_port(), free_port()]
    common = {"WT_DATA_DIR": str(tmp_path / "data"), "WT_INGEST_PORT": str(grpc_port)}
    ingests = []
    for address, port in zip(ADDRESSES, metrics_ports, strict=True):
        env = common | {"WT_HOST": address, "WT_INGEST_METRICS_PORT": str(port)}
        process = ServiceProcess(["serve", "ingest"], tmp_path / f"ingest-{address}.log", env)
        ingests.append(process.start())
        process.wait_ready(f"http://{address}:{port}/readyz")
    with DnsServer({"ingest.weathertweets.test": ADDRESSES}) as dns:
        target = f"dns://127.0.0.1:{dns.port}/ingest.weathertweets.test:{grpc_port}"
        env = common | {"WT_PORT": str(gateway_port), "WT_INGEST_TARGET": target}
        gateway = ServiceProcess(["serve", "gateway"], tmp_path / "gateway.log", env).start()
        url = f"http://127.0.0.1:{gateway_port}"
        try:
            gateway.wait_ready(url + "/readyz")
            records = generate(3000, seed=71)
            first = asyncio.run(
                run_load(url, records[:1000], total=1000, concurrency=8, rate=0, batch=0)
            )
            assert (first.accepted, first.errors, first.rejected) == (1000, 0, 0)
            shares = [
                _published(f"http://{a}:{p}/metrics")
                for a, p in zip(ADDRESSES, metrics_ports, strict=True)
            ]
            assert sum(shares) == 1000 and min(shares) > 0, shares  # both replicas took calls

            second = Outcome()

            def load() -> None:
                nonlocal second
                second = asyncio.run(
                    run_load(url, records[1000:], total=2000, concurrency=8, rate=200, batch=0)
                )

            sender = threading.Thread(target=load)
            sender.start()
            time.sleep(3)
            ingests[0].kill()  # SIGKILL one replica mid-load
            sender.join(60)
            assert not sender.is_alive()
            failed = second.rejected + second.errors
            assert failed <= 8, second.statuses  # at most the requests in flight at the kill
            assert second.accepted >= 1992
            with sqlite3.connect(tmp_path / "data" / "broker.db") as db:
                (logged,) = db.execute("SELECT count(*) FROM log").fetchone()
            assert first.accepted + second.accepted <= logged <= 3000  # nothing acked was lost
        finally:
            gateway.stop()
            for process in ingests:
                if process.proc is not None and process.proc.poll() is None:
                    process.stop()
