"""`make bench`: throughput of the gateway's POST path against a baseline, in one run.

ours      `weathertweets up` (embedded backends): validate, gRPC to ingest, durable SQLite
          append (fsync), then 202 — and the archiver and counter consuming in the same process.
baseline  the same HTTP server (uvicorn, one worker) with an ASGI app that reads the body and
          answers 202 at once: no validation, no gRPC, no disk. The ceiling of the HTTP stack.

Each case runs RUNS times on this machine (load generator and server share its cores); the
report gives medians and the ratio ours / baseline. Results: build/bench/results.json.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from weathertweets.gendata import generate
from weathertweets.loadgen import run_load

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3
REQUESTS = 4000
CONCURRENCY = 32

BASELINE_APP = """
import uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"8")]})
    await send({"type": "http.response.body", "body": b'{"id":0}'})
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_level="warning",
            access_log=False)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def measure(url: str, records: list[dict[str, str]], batch: int) -> float:
    total = REQUESTS * (batch or 1)
    outcome = asyncio.run(
        run_load(url, records, total=total, concurrency=CONCURRENCY, rate=0, batch=batch)
    )
    if outcome.errors or outcome.rejected:
        raise RuntimeError(f"errors during the benchmark: {outcome.statuses}")
    return outcome.accepted / outcome.elapsed


def main() -> int:
    records = generate(5000, seed=1)
    results: dict[str, list[float]] = {"baseline": [], "ours": [], "ours_batch_100": []}
    with tempfile.TemporaryDirectory() as data:
        base_port, port, grpc_port = free_port(), free_port(), free_port()
        baseline = subprocess.Popen([sys.executable, "-c", BASELINE_APP, str(base_port)])
        command = [sys.executable, "-m", "weathertweets.cli", "up", "--data-dir", data]
        ours = subprocess.Popen(
            [*command, "--port", str(port), "--ingest-port", str(grpc_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(f"http://127.0.0.1:{base_port}/")
            wait_ready(f"http://127.0.0.1:{port}/healthz")
            for run in range(RUNS):  # interleaved, so drift hits both alike
                results["baseline"].append(measure(f"http://127.0.0.1:{base_port}", records, 0))
                results["ours"].append(measure(f"http://127.0.0.1:{port}", records, 0))
                results["ours_batch_100"].append(
                    measure(f"http://127.0.0.1:{port}", records, 100) if run == 0 else 0.0
                )
                print(f"run {run + 1}/{RUNS} done", flush=True)
        finally:
            for process in (baseline, ours):
                process.terminate()
                process.wait(30)
    median = {name: statistics.median(v) for name, v in results.items() if name != "ours_batch_100"}
    median["ours_batch_100"] = results["ours_batch_100"][0]
    report = {
        "runs": RUNS,
        "requests_per_run": REQUESTS,
        "concurrency": CONCURRENCY,
        "tweets_per_second": {k: round(v) for k, v in median.items()},
        "all_runs": {k: [round(x) for x in v if x] for k, v in results.items()},
        "ratio_ours_to_baseline": round(median["ours"] / median["baseline"], 3),
        "ratio_batch_to_baseline": round(median["ours_batch_100"] / median["baseline"], 2),
    }
    out = ROOT / "build" / "bench" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
