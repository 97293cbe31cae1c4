"""`weathertweets stack`: the four services as separate OS processes, watched, stopped in order.

A service that dies is reported at once with its exit code and log, and is never restarted
behind the operator's back; the stack then exits non-zero when it is stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from weathertweets.config import Settings

START_ORDER = ("ingest", "archiver", "counter", "gateway")
STOP_ORDER = ("gateway", "ingest", "archiver", "counter")  # stop taking tweets, then drain


@dataclass
class Child:
    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    reported: bool = False

    @property
    def state(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        if code is not None:
            return f"exited ({code})"
        return "ready" if self.ready else "starting"


def _answers_200(url: str) -> bool:
    """The standard library only: `stack` runs in the runtime image, without dev tools."""
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
        return bool(response.status == 200)
    return False


def child_environment(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.environment(), "PYTHONUNBUFFERED": "1"}


@dataclass
class Stack:
    settings: Settings
    log_dir: Path
    children: dict[str, Child] = field(default_factory=dict)
    stopping: bool = False

    def __post_init__(self) -> None:
        ports = {
            "gateway": self.settings.port,
            "ingest": self.settings.ingest_metrics_port,
            "archiver": self.settings.archiver_port,
            "counter": self.settings.counter_port,
        }
        self.children = {
            name: Child(name, ports[name], self.log_dir / f"{name}.log") for name in START_ORDER
        }

    def report(self, line: str) -> None:
        print(line, flush=True)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = child_environment(self.settings)
        for child in self.children.values():
            log = child.log.open("ab")
            command = [sys.executable, "-m", "weathertweets.cli", "serve", child.name]
            child.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )
            log.close()
        self._write_prometheus_targets()

    def wait_ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            for child in self.children.values():
                if not child.ready and child.process and child.process.poll() is None:
                    child.ready = _answers_200(f"http://{self.host}:{child.port}/readyz")
            if self._report_deaths() or all(c.ready for c in self.children.values()):
                break
            time.sleep(0.2)
        return all(c.ready for c in self.children.values())

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.settings.host in ("0.0.0.0", "::") else self.settings.host

    def _write_prometheus_targets(self) -> None:
        if not self.settings.prometheus_targets_file:
            return
        groups = [
            {"targets": [f"{self.host}:{c.port}"], "labels": {"service": c.name}}
            for c in self.children.values()
        ]
        target = Path(self.settings.prometheus_targets_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_suffix(".tmp")
        scratch.write_text(json.dumps(groups, indent=1))
        scratch.replace(target)  # Prometheus must never read half a file

    def table(self) -> str:
        rows = [f"{'service':<9} {'pid':>7}  {'state':<12} {'address':<22} log"]
        for c in self.children.values():
            pid = c.process.pid if c.process else "-"
            address = f"http://{self.host}:{c.port}"
            rows.append(f"{c.name:<9} {pid:>7}  {c.state:<12} {address:<22} {c.log}")
        return "\n".join(rows)

    def _report_deaths(self) -> bool:
        died = False
        for child in self.children.values():
            if child.process and child.process.poll() is not None and not child.reported:
                child.reported = True
                died = True
                tail = child.log.read_text(errors="replace").splitlines()[-5:]
                self.report(
                    f"!! {child.name} exited with code {child.process.returncode}; "
                    f"it is not restarted. Last lines of {child.log}:\n   " + "\n   ".join(tail)
                )
        return died

    def watch(self) -> None:
        while not self.stopping:
            self._report_deaths()
            if all(c.process and c.process.poll() is not None for c in self.children.values()):
                self.report("every service has exited")
                return
            time.sleep(0.3)

    def stop(self, timeout: float = 30) -> int:
        for name in STOP_ORDER:
            child = self.children[name]
            if child.process is None or child.process.poll() is not None:
                continue
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.report(f"!! {name} did not stop within {timeout:.0f}s; killing it")
                child.process.kill()
                child.process.wait()
        self.report(self.table())
        clean = all(c.process and c.process.returncode == 0 for c in self.children.values())
        return 0 if clean else 1


def run_stack(settings: Settings, log_dir: Path) -> int:
    if not settings.internal_token:  # the gateway and ingest processes share this secret
        settings.internal_token = secrets.token_urlsafe(32)
    stack = Stack(settings, log_dir)

    def on_signal(signum: int, _: FrameType | None) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack.start()
    ready = stack.wait_ready()
    stack.report(stack.table())
    if ready:
        stack.report(
            f"stack ready: post to http://{stack.host}:{settings.port}/input (Ctrl-C stops)"
        )
        stack.watch()
    else:
        stack.report("!! the stack did not become ready; stopping it")
    code = stack.stop()
    return code if ready else 1
