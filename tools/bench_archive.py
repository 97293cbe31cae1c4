"""How fast the MongoDB-wire server takes the archive's documents, alone on the machine.

    .venv/bin/python tools/bench_archive.py [mongodb://127.0.0.1:27018] [documents]

Inserts documents shaped like the archiver's (`insert_many`, unordered, 2 000 a call) into a
scratch collection, with and without the archive's two indexes, from one writer and from two;
prints documents a second and the server's CPU per document when its pid is found (FerretDB
started by `make services`). The collections are dropped afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

URL = sys.argv[1] if len(sys.argv) > 1 else "mongodb://127.0.0.1:27018"
DOCUMENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
BATCH = 2_000


def server_cpu_seconds() -> float | None:
    found = subprocess.run(["pgrep", "-f", "ferretdb"], capture_output=True, text=True).stdout
    if not found.split():
        return None
    with open(f"/proc/{found.split()[0]}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def run(client: AsyncMongoClient[dict[str, Any]], indexes: list[str], writers: int) -> None:
    collection = client["wt_bench_archive"][f"c{secrets.token_hex(4)}"]
    for name in indexes:
        await collection.create_index(name)
    now = datetime.now(UTC)
    documents = [
        {
            "_id": f"{i:026d}",
            "texto": "Llueve sin parar hoy en la costa",
            "pais": "Guatemala",
            "timestamp": now,
            "received_at": now,
            "archived_at": now,
        }
        for i in range(DOCUMENTS)
    ]
    chunks = [documents[i : i + BATCH] for i in range(0, DOCUMENTS, BATCH)]

    async def writer(first: int) -> None:
        for chunk in chunks[first::writers]:
            await collection.insert_many(chunk, ordered=False)

    cpu_before, started = server_cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    elapsed, cpu_after = time.perf_counter() - started, server_cpu_seconds()
    cpu = ""
    if cpu_before is not None and cpu_after is not None:
        cpu = f", server {(cpu_after - cpu_before) / DOCUMENTS * 1e6:.0f} µs CPU a document"
    label = "+".join(indexes) or "no secondary index"
    print(f"{label:>18}, {writers} writer(s): {DOCUMENTS / elapsed:>9,.0f} documents/s{cpu}")
    await collection.drop()


async def main() -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(URL, tz_aware=True)
    try:
        for writers in (1, 2):
            await run(client, ["pais", "received_at"], writers)
            await run(client, [], writers)
    finally:
        await client.drop_database("wt_bench_archive")
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
