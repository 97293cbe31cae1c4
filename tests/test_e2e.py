"""End to end on real processes: `weathertweets up`, its CLI tools, Locust, a crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Pipeline, ServiceProcess, free_port
from weathertweets.client import NO_RETRIES, ApiError, AsyncClient
from weathertweets.gendata import generate
from weathertweets.loadgen import run_load

pytestmark = pytest.mark.e2e

MALFORMED: list[tuple[bytes, str]] = [
    (b'{"texto": "Sol"', "application/json"),
    (b'{"texto": "", "pais": "Chile"}', "application/json"),
    (b'{"texto": "Sol", "pais": "   "}', "application/json"),
    (b'{"texto": "Sol"}', "application/json"),
    (b'{"texto": 12, "pais": "Chile"}', "application/json"),
    (b'{"texto": ["Sol"], "pais": "Chile"}', "application/json"),
    (b'{"texto": "\xc3\x28", "pais": "Chile"}', "application/json"),
    (b'"Sol"', "application/json"),
    (b"<tweet><texto>Sol</texto><pais>Chile</pais></tweet>", "application/xml"),
    (b"texto=Sol&pais=", "application/x-www-form-urlencoded"),
    (json.dumps({"texto": "x" * 281, "pais": "Chile"}).encode(), "application/json"),
]


def test_two_thousand_tweets_are_counted_and_archived_exactly(pipeline: Pipeline) -> None:
    pipeline.start()
    records = generate(2000, seed=7)
    single = asyncio.run(
        run_load(pipeline.url, records[:1000], total=1000, concurrency=16, rate=0, batch=0)
    )
    assert (single.accepted, single.rejected, single.errors) == (1000, 0, 0)
    with httpx.Client(base_url=pipeline.url, timeout=30) as http:
        for start in range(1000, 2000, 250):
            response = http.post("/api/v1/tweets", json=records[start : start + 250])
            assert (response.status_code, response.json()) == (202, {"accepted": 250})
        before = pipeline.wait_settled(2000)
        for i in range(50):
            body, content_type = MALFORMED[i % len(MALFORMED)]
            response = http.post("/input", content=body, headers={"content-type": content_type})
            assert 400 <= response.status_code < 500, (body, response.status_code)
            assert response.json()["error"]["message"]
    stats = pipeline.wait_settled(2000)
    assert stats == before
    assert stats["countries"] == dict(Counter(r["pais"] for r in records))
    assert pipeline.process is not None
    assert pipeline.process.stop() == 0
    assert "stopped cleanly" in pipeline.process.output


async def _post_until_killed(url: str, acked: list[str], attempts: int) -> None:
    records = generate(attempts, seed=11)
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for record in records:
        queue.put_nowait(record)

    async def worker(client: AsyncClient) -> None:
        while not queue.empty():
            record = queue.get_nowait()
            try:
                acked.append(await client.publish(record["texto"], record["pais"]))
            except (ApiError, httpx.HTTPError):
                return  # the process is gone

    async with AsyncClient(url, timeout=10, retries=NO_RETRIES) as client:
        await asyncio.gather(*(worker(client) for _ in range(8)))


async def _kill_after(pipeline: Pipeline, acked: list[str], threshold: int) -> None:
    while len(acked) < threshold:  # noqa: ASYNC110 - polling a list the workers append to
        await asyncio.sleep(0.01)
    assert pipeline.process is not None
    pipeline.process.kill()


def test_sigkill_mid_stream_loses_nothing_acknowledged_and_counts_once(
    pipeline: Pipeline,
) -> None:
    pipeline.start()
    acked: list[str] = []

    async def scenario() -> None:
        await asyncio.gather(
            _post_until_killed(pipeline.url, acked, 20_000), _kill_after(pipeline, acked, 1500)
        )

    asyncio.run(scenario())
    assert len(acked) >= 1500
    pipeline.start()  # same data dir
    stats = pipeline.wait_settled()
    with sqlite3.connect(pipeline.data_dir / "broker.db") as broker:
        (published,) = broker.execute("SELECT count(*) FROM log").fetchone()
    with sqlite3.connect(pipeline.data_dir / "store.db") as store:
        archived_ids = {row[0] for row in store.execute("SELECT id FROM register")}
        per_country = dict(store.execute("SELECT pais, count(*) FROM register GROUP BY pais"))
    assert set(acked) <= archived_ids  # every acknowledged tweet was archived
    assert stats["total"] == stats["archived"] == len(archived_ids) == published
    assert stats["countries"] == per_country  # counted exactly once each


def test_gen_data_and_load_commands(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.start()
    data = tmp_path / "data.json"
    cli = [sys.executable, "-m", "weathertweets.cli"]
    made = subprocess.run(
        [*cli, "gen-data", "-n", "3000", "-o", str(data), "--seed", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 3000 tweets" in made.stdout
    load = subprocess.run(
        [*cli, "load", "--url", pipeline.url, "-f", str(data), "-c", "16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert load.returncode == 0, load.stderr
    assert "accepted tweets" in load.stdout and "3000" in load.stdout
    assert "p99" in load.stdout
    assert pipeline.wait_settled(3000)["total"] == 3000
    bad = subprocess.run(
        [*cli, "load", "--url", "http://127.0.0.1:9", "-f", str(data), "-n", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1  # every request failed: a non-zero exit


def test_locust_sends_every_record_once_then_stops(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.start()
    data = tmp_path / "data.json"
    data.write_text(json.dumps(generate(400, seed=5)), encoding="utf-8")
    env = {**os.environ, "WT_LOCUST_DATA": str(data)}
    run = subprocess.run(
        [
            *(sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless"),
            *("-u", "10", "-r", "10", "--run-time", "120s", "-H", pipeline.url, "--only-summary"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "the data is used up" in run.stderr
    assert pipeline.wait_settled(400)["total"] == 400


def test_stack_reports_a_dead_service_and_never_restarts_it(tmp_path: Path) -> None:
    ports = {name: str(free_port()) for name in ("WT_PORT", "WT_INGEST_PORT")}
    ports |= {n: str(free_port()) for n in ("WT_INGEST_METRICS_PORT", "WT_ARCHIVER_PORT")}
    ports["WT_COUNTER_PORT"] = str(free_port())
    env = {**ports, "WT_DATA_DIR": str(tmp_path / "data"), "WT_PROMETHEUS_TARGETS_FILE": ""}
    stack = ServiceProcess(["stack"], tmp_path / "stack.log", env).start()
    stack.wait_ready(f"http://127.0.0.1:{ports['WT_ARCHIVER_PORT']}/readyz", timeout=90)
    deadline = time.monotonic() + 60
    while "stack ready" not in stack.output:
        assert time.monotonic() < deadline, stack.output
        time.sleep(0.2)
    line = next(row for row in stack.output.splitlines() if row.startswith("archiver "))
    archiver_pid = int(line.split()[1])
    os.kill(archiver_pid, signal.SIGKILL)
    while "it is not restarted" not in stack.output:
        assert time.monotonic() < deadline + 30, stack.output
        time.sleep(0.2)
    assert "archiver exited with code -9" in stack.output
    time.sleep(1)
    assert stack.proc is not None
    children = Path(f"/proc/{stack.proc.pid}/task/{stack.proc.pid}/children").read_text().split()
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in children]
    assert len(commands) == 3  # ingest, counter, gateway: no new archiver
    assert [b"serve", b"archiver"] not in [c[-3:-1] for c in commands]
    assert stack.stop() == 1  # stopped, but not cleanly: one service had died
    assert "exited (-9)" in stack.output and "exited (0)" in stack.output


def test_live_events_stream_and_do_not_hold_up_a_shutdown(pipeline: Pipeline) -> None:
    pipeline.start()
    httpx.post(pipeline.url + "/input", json={"texto": "Niebla", "pais": "Chile"})
    pipeline.wait_settled(1)
    with (
        httpx.Client(timeout=10) as http,
        http.stream("GET", pipeline.url + "/api/v1/live") as events,
    ):
        assert events.headers["content-type"] == "text/event-stream"
        first = next(line for line in events.iter_lines() if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["weather"]["Chile"]["dominant"] == "fog"
        assert pipeline.process is not None
        started = time.monotonic()
        assert pipeline.process.stop() == 0
        assert time.monotonic() - started < 10  # the open stream was ended, not waited for


def test_a_dead_consumer_stops_the_process_with_a_non_zero_exit(pipeline: Pipeline) -> None:
    """A store that refuses writes in a way no retry fixes (here a trigger someone added)
    kills the archiver's task: the process says why and exits 1 for its supervisor to act,
    instead of retrying forever behind a green /readyz."""
    pipeline.start()
    with sqlite3.connect(pipeline.data_dir / "store.db") as store:
        store.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON register BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    answer = httpx.post(pipeline.url + "/input", json={"texto": "Sol", "pais": "Chile"})
    assert answer.status_code == 202  # the broker has it; the archive will get it after a fix
    assert pipeline.process is not None and pipeline.process.proc is not None
    assert pipeline.process.proc.wait(60) == 1
    assert "archiver died; stopping" in pipeline.process.output
    with sqlite3.connect(pipeline.data_dir / "broker.db") as broker:
        (committed,) = broker.execute(
            "SELECT coalesce(max(next_offset), 1) FROM positions WHERE grp = 'archiver'"
        ).fetchone()
    assert committed == 1  # not committed: the tweet is archived once the store is fixed
