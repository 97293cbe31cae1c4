"""Engines of a test's own — a Redis, a MongoDB-wire server, a Kafka — on free ports in the
test's folder, from the binaries `make services` installed, so a test may stall (SIGSTOP), kill
and restart one without touching the engines other tests share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT, free_port
from tests.engines import require_engines

ENGINES = ROOT / ".cache" / "engines"


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early:\n{log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"port {port} not open after {seconds}s:\n{log.read_text()[-2000:]}")


class PrivateEngine:
    name = "engine"
    ready_within = 30.0

    def __init__(self, folder: Path) -> None:
        require_engines()  # the binaries come with `make services`
        self.folder, self.port = folder / self.name, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log_path = self.folder / f"{self.name}.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
            )
        _wait_port(self.port, self.process, log_path, self.ready_within)

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(30)


class PrivateRedis(PrivateEngine):
    """Durable like the shared one (AOF, fsync always)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no",
        ]  # fmt: skip


class PrivateMongo(PrivateEngine):
    name = "ferretdb"

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/weathertweets"

    def command(self) -> list[str]:
        binary = str(ENGINES / "bin" / "ferretdb-embedded")
        return [binary, "-listen", f"127.0.0.1:{self.port}", "-dir", str(self.folder / "data")]


class PrivateKafka(PrivateEngine):
    """One KRaft node (broker and controller), with the jars `make services` fetched."""

    name = "kafka"
    ready_within = 90.0

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        controller = free_port()
        node = ROOT / "tools" / "engines" / "kafka-node.sh"
        voters = f"1@127.0.0.1:{controller}"
        return [
            str(node),
            str(self.folder),
            "1",
            "127.0.0.1",
            str(self.port),
            str(controller),
            voters,
        ]
