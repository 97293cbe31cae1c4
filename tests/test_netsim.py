"""The test hosts' switch does what the fault scenarios rely on: it forwards, it cuts a link one
way or both, it isolates a host, and it delays packets."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from tests.netsim import Network

pytestmark = pytest.mark.e2e

ECHO = (
    "import socket, sys\n"
    "server = socket.create_server((sys.argv[1], 7000))\n"
    "while True:\n"
    "    connection, _ = server.accept()\n"
    "    with connection:\n"
    "        connection.sendall(connection.recv(100))\n"
)
# Host `a` also sends a datagram to the client every 50 ms: traffic in one direction only.
BEACON = (
    "import socket, sys, time\n"
    "sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "while True:\n"
    "    sender.sendto(b'beacon', (sys.argv[1], 7001))\n"
    "    time.sleep(0.05)\n"
)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    if os.geteuid() != 0:
        if os.environ.get("WT_REQUIRE_ENGINES") == "1":
            pytest.fail("the test hosts need root (network namespaces and TUN devices)")
        pytest.skip("the test hosts need root")
    folder = tmp_path_factory.mktemp("netsim")
    network = Network(folder)
    try:
        network.add("client", 1, own_namespace=False)
        for name, number in (("a", 2), ("b", 3)):
            address = network.add(name, number)
            network.run(name, [sys.executable, "-c", ECHO, address], folder / f"{name}.log")
        client = network.addresses["client"]
        network.run("a", [sys.executable, "-c", BEACON, client], folder / "beacon.log")
        yield network
    finally:
        network.close()
    assert "wt-" not in os.popen("ip netns list").read(), "the switch left namespaces behind"


def _echo(address: str, timeout: float = 1.5) -> float:
    """Seconds for one TCP connect + echo, or raise OSError."""
    begun = time.monotonic()
    with socket.create_connection((address, 7000), timeout=timeout) as connection:
        connection.sendall(b"ping")
        assert connection.recv(100) == b"ping"
    return time.monotonic() - begun


def _reachable(address: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _echo(address)
            return True
        except OSError:
            time.sleep(0.1)
    return False


def test_hosts_reach_each_other_through_the_switch(net: Network) -> None:
    assert _reachable(net.addresses["a"]) and _reachable(net.addresses["b"])
    assert net.stats()["forwarded"] > 0


def _beacon_heard(net: Network) -> bool:
    """Whether a datagram from host `a` reaches the client within a second."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind((net.addresses["client"], 7001))
        listener.settimeout(1)
        try:
            return listener.recv(100) == b"beacon"
        except TimeoutError:
            return False


def test_a_cut_drops_one_direction_or_both(net: Network) -> None:
    a = net.addresses["a"]
    assert _beacon_heard(net)
    before = net.stats()["cut"]
    net.cut("client", "a", both_ways=False)
    try:
        with pytest.raises(OSError):
            _echo(a)  # our SYNs never arrive
        assert _beacon_heard(net)  # while a's packets still reach us
        assert net.stats()["cut"] > before
    finally:
        net.heal()
    net.cut("a", "client", both_ways=False)
    try:
        assert not _beacon_heard(net)
        with pytest.raises(OSError):
            _echo(a)  # the SYN arrives, the answer is lost
    finally:
        net.heal()
    net.cut("client", "a")
    try:
        assert not _beacon_heard(net)
        with pytest.raises(OSError):
            _echo(a)
    finally:
        net.heal()
    assert _reachable(a) and _beacon_heard(net)


def test_an_isolated_host_answers_nothing_until_revived(net: Network) -> None:
    b = net.addresses["b"]
    net.isolate("b")
    with pytest.raises(OSError):
        _echo(b)
    assert _echo(net.addresses["a"]) < 1  # the others are untouched
    net.revive("b")
    assert _reachable(b)


def test_impairment_delays_every_packet_and_clears(net: Network) -> None:
    a = net.addresses["a"]
    plain = min(_echo(a) for _ in range(3))
    net.impair(delay=0.1)
    try:
        slow = min(_echo(a, timeout=5) for _ in range(3))
    finally:
        net.impair()
    assert slow >= 0.35 > plain  # connect and echo: two round trips of 2 × 100 ms
    assert min(_echo(a) for _ in range(3)) < 0.1
