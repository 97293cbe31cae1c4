"""`weathertweets load`: replay a data file against the gateway and summarise what happened."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from weathertweets.client import NO_RETRIES, ApiError, AsyncClient
from weathertweets.domain import PAIS_ALIASES, TEXTO_ALIASES


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON array (the seed's data.json) or NDJSON, one tweet per line."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON array or NDJSON of tweets")
    return records


@dataclass
class Outcome:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0


async def run_load(
    url: str,
    records: list[dict[str, Any]],
    *,
    total: int,
    concurrency: int,
    rate: float,
    batch: int,
    progress: Progress | None = None,
    api_key: str | None = None,
) -> Outcome:
    """Send `total` tweets (cycling through `records`), `batch` per request when batch > 0.

    Through `weathertweets.client` without retries, so every answer is counted as it came;
    each write carries its own Idempotency-Key. Under `rate`, latency counts from the moment a
    request was due, not from when it left: a stalled server cannot hide its queue."""
    tweets = list(islice(cycle(records), total))
    if batch > 0:
        bodies: list[Any] = [tweets[i : i + batch] for i in range(0, len(tweets), batch)]
    else:
        bodies = list(tweets)
    outcome = Outcome()
    task = progress.add_task("tweets", total=total) if progress else None
    next_index = 0
    started = time.perf_counter()

    # One client (one connection) per worker: httpcore's shared pool costs more CPU per request
    # the more connections it holds, and the generator must not be what limits the rate.
    clients = [
        AsyncClient(url, api_key=api_key, timeout=30, retries=NO_RETRIES, max_connections=1)
        for _ in range(concurrency)
    ]
    try:

        async def send(client: AsyncClient, body: Any) -> int:
            if batch > 0:
                return await client.publish_batch(body)
            texto = next((body[k] for k in TEXTO_ALIASES if k in body), "")
            pais = next((body[k] for k in PAIS_ALIASES if k in body), "")
            await client.publish(str(texto), str(pais))
            return 1

        async def worker(client: AsyncClient) -> None:
            nonlocal next_index
            while next_index < len(bodies):
                index = next_index
                next_index += 1
                due = time.perf_counter()
                if rate > 0:
                    due = started + index / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                count = len(bodies[index]) if batch > 0 else 1
                try:
                    await send(client, bodies[index])
                    status = "202"
                except ApiError as error:
                    status = str(error.status)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                outcome.latencies.append(time.perf_counter() - due)
                outcome.requests += 1
                outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
                if status == "202":
                    outcome.accepted += count
                elif status.startswith("4"):
                    outcome.rejected += count
                else:
                    outcome.errors += count
                if progress is not None and task is not None:
                    progress.advance(task, count)

        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    outcome.elapsed = time.perf_counter() - started
    return outcome


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def summary(outcome: Outcome, batch: int) -> Table:
    table = Table(title="load summary", show_header=False)
    unit = f"requests (batches of {batch})" if batch else "requests"
    rows = [
        ("accepted tweets", f"{outcome.accepted}"),
        ("rejected tweets (4xx)", f"{outcome.rejected}"),
        ("errors (5xx, network)", f"{outcome.errors}"),
        (unit, f"{outcome.requests} in {outcome.elapsed:.2f} s = {outcome.rate:.0f}/s"),
        ("latency p50", f"{outcome.percentile(0.50) * 1000:.1f} ms"),
        ("latency p95", f"{outcome.percentile(0.95) * 1000:.1f} ms"),
        ("latency p99", f"{outcome.percentile(0.99) * 1000:.1f} ms"),
        ("statuses", ", ".join(f"{k}: {v}" for k, v in sorted(outcome.statuses.items()))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
