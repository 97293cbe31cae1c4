"""`weathertweets stack`: the four services as separate OS processes, watched, stopped in order.

A service that dies is reported at once with its exit code and log, and is never restarted
behind the operator's back; the stack then exits non-zero when it is stopped.

`--replicas ingest=2,counter=2` runs several instances of a service, each its own process:
instance N listens on every port of the first plus 100 × (N − 1) (`ingest-2`: gRPC 50151,
HTTP 8102). The gateways balance over every ingest; the archivers share one consumer group,
the counters another, and the broker shares the partitions among them.

On Kafka the archiver and counter run at the lowest CPU priority, Linux's idle scheduling
class (`WT_SINK_IDLE`; else nice `WT_SINK_NICE`, 10): on a machine the services share, a client
waiting for its 202 goes before a sink, which Kafka buffers and which catches up on the cores
the load leaves free. While the gateways and ingest use at least half the machine's cores
(`WT_SINK_DEFER`), the sinks take no new batch at all (`services.deferral`).

`--workers N` makes each gateway instance N processes sharing its port (SO_REUSEPORT), started
and watched by the stack itself like any service (`gateway-w1`, `gateway-w2`): no parent
process in between, and a worker stops by itself if the stack is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import FrameType

from weathertweets.config import PARENT_PID, SettingError, Settings
from weathertweets.services.deferral import IntakeWatch, machine_cores

START_ORDER = ("ingest", "archiver", "counter", "gateway")
STOP_ORDER = ("gateway", "ingest", "archiver", "counter")  # stop taking tweets, then drain
PORT_STEP = 100
MAX_REPLICAS = 9
CONSUMERS = ("archiver", "counter")
INTAKE = ("gateway", "ingest")


def parse_replicas(text: str) -> dict[str, int]:
    """`ingest=2,counter=3` → instances of each service (1 where not named)."""
    counts = dict.fromkeys(START_ORDER, 1)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, number = part.partition("=")
        if name.strip() not in counts or not number.strip().isdigit():
            raise SettingError(
                f"--replicas {text!r}: expected service=N,... for {', '.join(START_ORDER)}"
            )
        counts[name.strip()] = int(number)
    for name, count in counts.items():
        if not 1 <= count <= MAX_REPLICAS:
            raise SettingError(f"--replicas: {name}={count}, expected 1 to {MAX_REPLICAS}")
    return counts


def instance_settings(settings: Settings, index: int) -> Settings:
    """Instance `index` (from 0) of a service: every port moved up by PORT_STEP × index."""
    step = PORT_STEP * index
    return replace(
        settings,
        port=settings.port + step,
        ingest_port=settings.ingest_port + step,
        ingest_metrics_port=settings.ingest_metrics_port + step,
        archiver_port=settings.archiver_port + step,
        counter_port=settings.counter_port + step,
    )


def _http_port(service: str, settings: Settings) -> int:
    return {
        "gateway": settings.port,
        "ingest": settings.ingest_metrics_port,
        "archiver": settings.archiver_port,
        "counter": settings.counter_port,
    }[service]


@dataclass
class Child:
    name: str
    service: str
    settings: Settings
    log: Path
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    reported: bool = False
    log_start: int = 0  # the log's size when this run started it

    @property
    def state(self) -> str:
        if self.process is None:
            return "not started"
        code = self.process.poll()
        if code is not None:
            return f"exited ({code})"
        return "ready" if self.ready else "starting"

    @property
    def port(self) -> int:
        return _http_port(self.service, self.settings)

    def answers_ready(self, host: str) -> bool:
        """Its port answers /readyz; a worker sharing its port must also have said so itself
        (the port may have answered from another worker)."""
        if not _answers_200(host, self.port, "/readyz"):
            return False
        if not self.settings.reuse_port:
            return True
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return b"ready: " in log.read()


def _processes(service: str, settings: Settings) -> list[tuple[int, Settings]]:
    """(worker number, settings) of each process of one instance: a gateway with `workers`
    above one is that many processes on its port (numbered from 1), anything else one (0)."""
    if service != "gateway" or settings.workers <= 1:
        return [(0, settings)]
    worker = replace(settings, workers=1, reuse_port=True)
    return [(number, worker) for number in range(1, settings.workers + 1)]


def _workers_of_one(first: str, second: str) -> bool:
    """`gateway-w1` and `gateway-w2` (or `gateway-2-w1` and `gateway-2-w2`) share a port."""
    return "-w" in first and first.rpartition("-w")[0] == second.rpartition("-w")[0]


def _answers_200(host: str, port: int, path: str) -> bool:
    """A GET over a plain socket, so the supervisor stays small: urllib would bring 4 MB of
    modules (http.client, email) into a process that only watches the others."""
    head = b""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            while b"\r\n" not in head and len(head) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    return head.split(b" ", 2)[1:2] == [b"200"]


def child_environment(settings: Settings) -> dict[str, str]:
    env = {**os.environ, **settings.environment(), "PYTHONUNBUFFERED": "1"}
    if settings.reuse_port:
        env[PARENT_PID] = str(os.getpid())  # a gateway worker stops when the stack is gone
    return env


@dataclass
class Stack:
    settings: Settings
    log_dir: Path
    replicas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(START_ORDER, 1))
    children: dict[str, Child] = field(default_factory=dict)
    stopping: bool = False

    def __post_init__(self) -> None:
        several = [name for name in CONSUMERS if self.replicas[name] > 1]
        if several and not self.on_kafka:
            raise SettingError(
                f"several {' and '.join(several)} instances share their broker's partitions:"
                " that needs Kafka (WT_BROKER_URL=kafka://...); the embedded broker gives"
                " each group one consumer"
            )
        base = self.settings
        if self.replicas["ingest"] > 1 and base.ingest_target == f"127.0.0.1:{base.ingest_port}":
            ingests = (instance_settings(base, i) for i in range(self.replicas["ingest"]))
            targets = ",".join(f"{self.host}:{s.ingest_port}" for s in ingests)
            base = replace(base, ingest_target=f"ipv4:{targets}")
        for service in START_ORDER:
            count = self.replicas[service]
            for index in range(count):
                name = service if count == 1 else f"{service}-{index + 1}"
                for worker, settings in _processes(service, instance_settings(base, index)):
                    named = f"{name}-w{worker}" if worker else name
                    log = self.log_dir / f"{named}.log"
                    self.children[named] = Child(named, service, settings, log)
        self._check_ports()

    def _check_ports(self) -> None:
        """Each instance's ports are valid, fixed, and nobody else's (a gateway's workers
        share theirs)."""
        owners: dict[int, str] = {}
        for child in self.children.values():
            child.settings.checked()
            ports = [child.port]
            if child.service == "ingest":
                ports.append(child.settings.ingest_port)
            for port in ports:
                if port == 0 and len(self.children) > len(START_ORDER):
                    raise SettingError(
                        "--replicas and --workers need fixed ports (0 picks one per process)"
                    )
                if port in owners and _workers_of_one(owners[port], child.name):
                    continue
                if port and port in owners:
                    raise SettingError(
                        f"{child.name} and {owners[port]} would both listen on port {port}:"
                        f" instance N takes every port + {PORT_STEP} × (N − 1); move one port"
                    )
                owners[port] = child.name

    def report(self, line: str) -> None:
        print(line, flush=True)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self.children.values():
            log = child.log.open("ab")
            child.log_start = log.tell()
            command = [sys.executable, "-m", "weathertweets.cli", "serve", child.service]
            env = child_environment(child.settings)
            sink = child.service in CONSUMERS
            lower = partial(_lower_priority, self._sink_nice(), self._sink_idle()) if sink else None
            child.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                # In the child before it runs anything: every thread it starts inherits it.
                preexec_fn=lower,
            )
            log.close()
        self._write_prometheus_targets()

    @property
    def on_kafka(self) -> bool:
        return self.settings.broker_url.startswith("kafka://")

    def _sink_nice(self) -> int:
        """How much lower the sinks run: to WT_SINK_NICE, never below our own (that would need
        privilege), and only on Kafka: on the embedded broker the sinks' commits take the
        log's write lock the gateway appends under, and a low-priority holder would hold it up."""
        if not self.on_kafka:
            return 0
        return max(0, self.settings.sink_nice - os.getpriority(os.PRIO_PROCESS, 0))

    def _sink_idle(self) -> bool:
        """Whether the sinks run in the idle class: as `_sink_nice`, only on Kafka."""
        return self.on_kafka and self.settings.sink_idle and hasattr(os, "SCHED_IDLE")

    def wait_ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            for child in self.children.values():
                if not child.ready and child.process and child.process.poll() is None:
                    child.ready = child.answers_ready(self.host)
            if self._report_deaths() or all(c.ready for c in self.children.values()):
                break
            time.sleep(0.2)
        return all(c.ready for c in self.children.values())

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.settings.host in ("0.0.0.0", "::") else self.settings.host

    def gateways(self) -> str:
        ports = {c.port: None for c in self.children.values() if c.service == "gateway"}
        return " or ".join(f"http://{self.host}:{port}/input" for port in ports)

    def _write_prometheus_targets(self) -> None:
        if not self.settings.prometheus_targets_file:
            return
        by_port = {c.port: c.service for c in self.children.values()}  # one a worker group
        groups = [
            {"targets": [f"{self.host}:{port}"], "labels": {"service": service}}
            for port, service in by_port.items()
        ]
        target = Path(self.settings.prometheus_targets_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_suffix(".tmp")
        scratch.write_text(json.dumps(groups, indent=1))
        scratch.replace(target)  # Prometheus must never read half a file

    def table(self) -> str:
        width = max(11, *(len(name) for name in self.children))
        rows = [f"{'service':<{width}} {'pid':>7}  {'state':<12} {'address':<22} log"]
        for c in self.children.values():
            pid = c.process.pid if c.process else "-"
            address = f"http://{self.host}:{c.port}"
            rows.append(f"{c.name:<{width}} {pid:>7}  {c.state:<12} {address:<22} {c.log}")
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
        intake = self._intake_watch()
        while not self.stopping:
            self._report_deaths()
            if all(c.process and c.process.poll() is not None for c in self.children.values()):
                self.report("every service has exited")
                return
            if intake is not None:
                intake.look(self._pids(INTAKE), self._pids(CONSUMERS))
            time.sleep(0.3)

    def _intake_watch(self) -> IntakeWatch | None:
        """The sinks wait while the intake is busy (`WT_SINK_DEFER`): on Kafka, as `_sink_nice`,
        and where /proc tells what each process used."""
        share = self.settings.sink_defer
        if not (share and self.on_kafka):
            return None
        if not Path("/proc/self/stat").exists():
            return None
        return IntakeWatch(share, machine_cores())

    def _pids(self, services: tuple[str, ...]) -> list[int]:
        """The running, ready processes of these services."""
        return [
            c.process.pid
            for c in self.children.values()
            if c.service in services and c.ready and c.process and c.process.poll() is None
        ]

    def stop(self, timeout: float = 30) -> int:
        """Each service's instances together, services in STOP_ORDER."""
        for service in STOP_ORDER:
            group = [c for c in self.children.values() if c.service == service]
            live = [c for c in group if c.process is not None and c.process.poll() is None]
            for child in live:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in live:
                assert child.process is not None
                try:
                    child.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.report(f"!! {child.name} did not stop within {timeout:.0f}s; killing it")
                    child.process.kill()
                    child.process.wait()
        self.report(self.table())
        clean = all(c.process and c.process.returncode == 0 for c in self.children.values())
        return 0 if clean else 1


def run_stack(settings: Settings, log_dir: Path, replicas: dict[str, int] | None = None) -> int:
    if not settings.internal_token:  # the gateway and ingest processes share this secret
        settings.internal_token = secrets.token_urlsafe(32)
    stack = Stack(settings, log_dir, replicas or dict.fromkeys(START_ORDER, 1))

    def on_signal(signum: int, _: FrameType | None) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack.start()
    ready = stack.wait_ready()
    stack.report(stack.table())
    if ready:
        stack.report(f"stack ready: post to {stack.gateways()} (Ctrl-C stops)")
        stack.watch()
    else:
        stack.report("!! the stack did not become ready; stopping it")
    code = stack.stop()
    return code if ready else 1


def _lower_priority(nice: int, idle: bool) -> None:
    """In a sink's process before it runs anything: every thread it starts inherits this. A
    process may always move itself into the idle class; where a sandbox forbids it, the
    niceness stays."""
    if nice:
        os.nice(nice)
    if idle:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
