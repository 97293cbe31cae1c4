"""A tiny authoritative DNS server for tests: A records for names the test chooses.

gRPC's resolver can be pointed at it (`dns://127.0.0.1:<port>/name:port`), so a test can put
several local processes behind one name, as a Kubernetes headless Service does.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Mapping, Sequence

A, IN = 1, 1


def _question(packet: bytes) -> tuple[str, int, int, int]:
    """(name, qtype, qclass, end offset) of the first question."""
    labels, at = [], 12
    while packet[at]:
        length = packet[at]
        labels.append(packet[at + 1 : at + 1 + length].decode("ascii").lower())
        at += 1 + length
    qtype, qclass = struct.unpack("!HH", packet[at + 1 : at + 5])
    return ".".join(labels), qtype, qclass, at + 5


def answer(packet: bytes, zone: Mapping[str, Sequence[str]]) -> bytes:
    (ident,) = struct.unpack("!H", packet[:2])
    name, qtype, qclass, end = _question(packet)
    known = name in zone
    records = list(zone[name]) if known and qtype == A and qclass == IN else []
    flags = 0x8400 | (0 if known else 3)  # response, authoritative; NXDOMAIN when unknown
    header = struct.pack("!HHHHHH", ident, flags, 1, len(records), 0, 0)
    body = packet[12:end]
    for address in records:  # a pointer to the question's name, then A IN, TTL 1 s
        body += struct.pack("!HHHIH", 0xC00C, A, IN, 1, 4) + socket.inet_aton(address)
    return header + body


class DnsServer:
    def __init__(self, zone: Mapping[str, Sequence[str]]) -> None:
        self.zone = {name.lower(): list(addresses) for name, addresses in zone.items()}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            try:
                self._sock.sendto(answer(packet, self.zone), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue  # not a question we understand: no answer

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
