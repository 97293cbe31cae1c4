"""Shared fixtures: free ports and real `weathertweets` processes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """`weathertweets <args>` as a child process, with its output kept in a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "weathertweets.cli", *self.args]
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.output}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{url} not ready after {timeout}s:\n{self.output}")

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


class Pipeline:
    """`weathertweets up` on free ports over one data dir; restartable on the same dir."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.port = free_port()
        self.ingest_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ServiceProcess | None = None
        self.runs = 0
        self.env: dict[str, str] = {}  # extra WT_* variables for the process

    def start(self) -> Pipeline:
        self.runs += 1
        args = ["up", "--port", str(self.port), "--ingest-port", str(self.ingest_port)]
        args += ["--data-dir", str(self.data_dir)]
        log = self.log_dir / f"up-{self.runs}.log"
        self.process = ServiceProcess(args, log, self.env).start()
        self.process.wait_ready(self.url + "/readyz")
        return self

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(self.url + "/api/v1/stats", timeout=10).json())

    def wait_settled(self, expected: int | None = None, timeout: float = 60) -> dict[str, object]:
        """Stats once `total` == `archived` (== expected, if given) and stable."""
        deadline = time.monotonic() + timeout
        previous = None
        while time.monotonic() < deadline:
            stats = self.stats()
            settled = stats["total"] == stats["archived"]
            if settled and (expected is None or stats["total"] == expected):
                if stats == previous:
                    return stats
                previous = stats
            time.sleep(0.3)
        raise AssertionError(f"not settled after {timeout}s: {self.stats()}")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main()` configures the root logger for a process; a test calling it must not leave
    handlers bound to a captured (then closed) stream behind for the next test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    pipe = Pipeline(tmp_path / "data", tmp_path)
    yield pipe
    process = pipe.process.proc if pipe.process else None
    if process is not None and process.poll() is None:
        pipe.process.kill()  # type: ignore[union-attr]
