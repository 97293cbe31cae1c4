"""Test hosts: network namespaces joined by a switch of our own, which can cut and slow links.

Each host is a network namespace with one TUN interface (`wt0`, 64 KiB MTU) on 10.77.0.0/24;
the host `client` stays in the test's own namespace, so the test reaches every host directly.
The switch is one process (`python -m tests.netsim`, as root) that holds every TUN device and
forwards IPv4 packets between them, dropping those of a cut link (`cut a b` is one way) and,
when impaired, delaying each packet by `delay ± jitter` seconds (in order on each link) and
losing a share `loss` of them. Nothing leaves those interfaces.

Why not veth, a bridge and `tc netem`: this machine's kernel is built without sch_netem (and
without tc's drop action), so a user-space switch is how to add latency and loss here.

Control is one JSON object a line on the switch's stdin, answered on its stdout:
  {"op": "host", "name": "k1", "address": "10.77.0.11"}   (namespace wt-k1)
  {"op": "cut", "source": "gw", "target": "ing1"}   {"op": "heal"} (every cut and isolation)
  {"op": "isolate", "host": "k2"}   {"op": "rejoin", "host": "k2"}   (every link of a host)
  {"op": "impair", "delay": 0.2, "jitter": 0.05, "loss": 0.02}   {"op": "stats"}
The switch removes its namespaces when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUBNET = "10.77.0"
PREFIX = "wt-"
INTERFACE = "wt0"
MTU = 65_000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def namespace(host: str) -> str:
    return PREFIX + host


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _pids(name: str) -> list[int]:
    listed = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(pid) for pid in listed.stdout.split()]


def kill_namespace(name: str, seconds: float = 10) -> None:
    """SIGKILL every process in namespace `name`, and wait until they are gone."""
    deadline = time.monotonic() + seconds
    while (pids := _pids(name)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def remove_stale_namespaces() -> None:
    """Namespaces a crashed run left behind, with whatever still runs in them."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in (line.split()[0] for line in listed.splitlines() if line.strip()):
        if name.startswith(PREFIX):
            kill_namespace(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class Switch:
    ports: dict[bytes, int] = field(default_factory=dict)  # address → TUN fd
    names: dict[str, bytes] = field(default_factory=dict)
    cuts: set[tuple[bytes, bytes]] = field(default_factory=set)
    isolated: set[bytes] = field(default_factory=set)
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    due: dict[tuple[bytes, bytes], float] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"forwarded": 0, "cut": 0, "lost": 0, "failed": 0}
    )

    def add_host(self, name: str, address: str, own_namespace: bool = True) -> None:
        device = INTERFACE if own_namespace else PREFIX + name
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", device.encode(), IFF_TUN | IFF_NO_PI))
        run_in: list[str] = []
        if own_namespace:
            _ip("netns", "add", namespace(name))
            _ip("link", "set", device, "netns", namespace(name))
            run_in = ["-n", namespace(name)]
            _ip(*run_in, "link", "set", "lo", "up")
        _ip(*run_in, "addr", "add", f"{address}/24", "dev", device)
        _ip(*run_in, "link", "set", device, "mtu", str(MTU), "up")
        packed = socket.inet_aton(address)
        self.ports[packed] = fd
        self.names[name] = packed
        asyncio.get_running_loop().add_reader(fd, self._pump, fd)

    def _pump(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                packet = os.read(fd, MTU + 100)
            except BlockingIOError:
                return
            if len(packet) < 20 or packet[0] >> 4 != 4:
                continue  # IPv4 only
            link = (packet[12:16], packet[16:20])
            target = self.ports.get(link[1])
            if target is None:
                continue
            if link in self.cuts or link[0] in self.isolated or link[1] in self.isolated:
                self.counts["cut"] += 1
            elif self.loss and random.random() < self.loss:
                self.counts["lost"] += 1
            elif self.delay:
                wait = self.delay + random.uniform(-self.jitter, self.jitter)
                due = max(loop.time() + wait, self.due.get(link, 0.0))  # in order on a link
                self.due[link] = due
                loop.call_at(due, self._deliver, target, packet)
            else:
                self._deliver(target, packet)

    def _deliver(self, fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
            self.counts["forwarded"] += 1
        except OSError:
            self.counts["failed"] += 1

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "host":
            self.add_host(command["name"], command["address"], command.get("namespace", True))
        elif op == "cut":
            self.cuts.add((self.names[command["source"]], self.names[command["target"]]))
        elif op == "heal":
            self.cuts.clear()
            self.isolated.clear()
        elif op == "isolate":
            self.isolated.add(self.names[command["host"]])
        elif op == "rejoin":
            self.isolated.discard(self.names[command["host"]])
        elif op == "impair":
            self.delay, self.jitter = command.get("delay", 0.0), command.get("jitter", 0.0)
            self.loss = command.get("loss", 0.0)
        elif op != "stats":
            raise ValueError(f"unknown op {op!r}")
        return {"ok": True, **self.counts}

    def close(self) -> None:
        for fd in self.ports.values():
            os.close(fd)
        for name in self.names:
            subprocess.run(["ip", "netns", "del", namespace(name)], capture_output=True)


async def serve() -> None:
    switch = Switch()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                answer = switch.handle(json.loads(line))
            except (KeyError, ValueError, RuntimeError, OSError) as error:
                answer = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            print(json.dumps(answer), flush=True)
    finally:
        switch.close()


class Network:
    """The test's side: starts the switch, names hosts, runs commands on them."""

    def __init__(self, folder: Path) -> None:
        remove_stale_namespaces()
        self.folder = folder
        self.addresses: dict[str, str] = {}
        self._switch = subprocess.Popen(
            [sys.executable, "-m", "tests.netsim"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(folder / "switch.log").open("ab"),
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def _ask(self, **command: Any) -> dict[str, Any]:
        assert self._switch.stdin is not None and self._switch.stdout is not None
        self._switch.stdin.write(json.dumps(command) + "\n")
        self._switch.stdin.flush()
        line = self._switch.stdout.readline()
        if not line:
            log = (self.folder / "switch.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the switch exited:\n{log}")
        answer: dict[str, Any] = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"switch: {command}: {answer['error']}")
        return answer

    def add(self, name: str, host_number: int, *, own_namespace: bool = True) -> str:
        address = f"{SUBNET}.{host_number}"
        self._ask(op="host", name=name, address=address, namespace=own_namespace)
        self.addresses[name] = address
        return address

    def cut(self, a: str, b: str, *, both_ways: bool = True) -> None:
        self._ask(op="cut", source=a, target=b)
        if both_ways:
            self._ask(op="cut", source=b, target=a)

    def heal(self) -> None:
        self._ask(op="heal")

    def impair(self, delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0) -> None:
        self._ask(op="impair", delay=delay, jitter=jitter, loss=loss)

    def stats(self) -> dict[str, Any]:
        return self._ask(op="stats")

    def run(
        self, host: str, command: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`command` on `host`, in a session of its own (so a kill takes its children too)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", namespace(host), *command],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def kill_host(self, host: str) -> None:
        """A power cut: `host` answers nothing from now on (no reset, no FIN: its peers find
        out by timeouts), and everything running there is SIGKILLed. `revive` undoes the
        first half; what ran there has to be started again."""
        self.isolate(host)
        kill_namespace(namespace(host))

    def isolate(self, host: str) -> None:
        """Drop every packet to and from `host`."""
        self._ask(op="isolate", host=host)

    def revive(self, host: str) -> None:
        self._ask(op="rejoin", host=host)

    def close(self) -> None:
        for host in self.addresses:
            if host != "client":
                kill_namespace(namespace(host))
        if self._switch.stdin is not None:
            self._switch.stdin.close()
        try:
            self._switch.wait(20)
        except subprocess.TimeoutExpired:
            self._switch.kill()
            self._switch.wait()
        remove_stale_namespaces()


if __name__ == "__main__":
    asyncio.run(serve())
