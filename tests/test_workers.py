"""`--workers N`: several gateway processes on one port, the broker still exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Pipeline, ServiceProcess, free_port

pytestmark = pytest.mark.e2e


def _worker_prefixes(responses: list[httpx.Response]) -> set[str]:
    """Request ids are a process's random prefix and a counter: one prefix per worker."""
    return {r.headers["x-request-id"][:8] for r in responses}


def _wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _records(log: Path) -> int:
    with contextlib.closing(sqlite3.connect(log)) as conn:
        return int(conn.execute("SELECT count(*) FROM log").fetchone()[0])


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def test_workers_share_the_port_and_every_tweet_is_counted_once(pipeline: Pipeline) -> None:
    pipeline.env = {"WT_WORKERS": "2", "WT_INGEST_METRICS_PORT": "0"}
    pipeline.start()
    responses = []
    for i in range(300):  # a new connection each time: the kernel spreads them
        with httpx.Client(base_url=pipeline.url, timeout=10) as client:
            responses.append(client.post("/input", json={"texto": f"Sol {i}", "pais": "Chile"}))
    assert [r.status_code for r in responses] == [202] * 300
    assert len(_worker_prefixes(responses)) == 2
    batch = [{"texto": "Nieve", "pais": "Perú"}] * 500
    assert httpx.post(pipeline.url + "/api/v1/tweets", json=batch).status_code == 202
    stats = pipeline.wait_settled(800)
    assert stats["countries"] == {"Perú": 500, "Chile": 300}

    assert pipeline.process is not None and pipeline.process.proc is not None
    workers = _children(pipeline.process.proc.pid)
    assert len(workers) == 2
    assert pipeline.process.stop() == 0
    assert not any(_alive(pid) for pid in workers)
    appended = {n: _records(pipeline.data_dir / f"broker.{n}.db") for n in (1, 2)}
    assert all(appended.values()), appended  # each worker appends to a partition of its own
    assert sum(appended.values()) + _records(pipeline.data_dir / "broker.db") == 300 + 500

    pipeline.env = {}  # one process again, on the same data: nothing lost, nothing twice
    pipeline.start()
    assert pipeline.wait_settled(800)["total"] == 800
    assert pipeline.process.stop() == 0


def test_a_worker_that_dies_stops_the_parent_with_an_error(pipeline: Pipeline) -> None:
    pipeline.env = {"WT_WORKERS": "2", "WT_INGEST_METRICS_PORT": "0"}
    pipeline.start()
    assert pipeline.process is not None and pipeline.process.proc is not None
    parent = pipeline.process.proc
    _wait_for(lambda: "gateway × 2 (Ctrl-C stops)" in pipeline.process.output)  # type: ignore[union-attr]
    os.kill(_children(parent.pid)[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while parent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert parent.returncode == 1
    assert "gateway-workers died" in pipeline.process.output


def test_workers_do_not_outlive_a_killed_parent(pipeline: Pipeline) -> None:
    pipeline.env = {"WT_WORKERS": "2", "WT_INGEST_METRICS_PORT": "0"}
    pipeline.start()
    assert pipeline.process is not None and pipeline.process.proc is not None
    workers = _children(pipeline.process.proc.pid)
    pipeline.process.kill()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False


def test_a_stack_s_gateway_workers_are_its_children_and_do_not_outlive_it(
    tmp_path: Path,
) -> None:
    names = ("WT_PORT", "WT_INGEST_PORT", "WT_INGEST_METRICS_PORT", "WT_ARCHIVER_PORT")
    ports = {name: str(free_port()) for name in (*names, "WT_COUNTER_PORT")}
    env = {**ports, "WT_DATA_DIR": str(tmp_path / "data"), "WT_PROMETHEUS_TARGETS_FILE": ""}
    stack = ServiceProcess(["stack"], tmp_path / "stack.log", {**env, "WT_WORKERS": "2"}).start()
    url = f"http://127.0.0.1:{ports['WT_PORT']}"
    _wait_for(lambda: "stack ready" in stack.output, timeout=90)
    assert stack.proc is not None
    children = {pid: _command(pid) for pid in _children(stack.proc.pid)}
    workers = [pid for pid, command in children.items() if command.endswith("serve gateway")]
    assert len(children) == 5 and len(workers) == 2  # no gateway parent in between
    assert all(not _children(pid) for pid in workers)
    nice = {_command(pid).rpartition(" ")[2]: _nice(pid) for pid in children}
    own = os.getpriority(os.PRIO_PROCESS, 0)  # the embedded broker: no sink runs lower
    assert nice == {"gateway": own, "ingest": own, "archiver": own, "counter": own}
    responses = []
    for i in range(200):  # a new connection each time: the kernel spreads them
        with httpx.Client(base_url=url, timeout=10) as client:
            responses.append(client.post("/input", json={"texto": f"Sol {i}", "pais": "Chile"}))
    assert [r.status_code for r in responses] == [202] * 200
    assert len(_worker_prefixes(responses)) == 2

    def counted() -> bool:
        stats = httpx.get(url + "/api/v1/stats", timeout=10).json()
        return bool(stats["total"] == stats["archived"] == 200)

    _wait_for(counted)
    stack.kill()  # no chance to stop its children: the workers see it and stop by themselves
    _wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30)
    for pid in set(children) - set(workers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _nice(pid: int) -> int:
    """A process's niceness (`os.getpriority` of a pid reads only its main thread's)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
