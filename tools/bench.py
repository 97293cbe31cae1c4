"""`make bench`: the gateway's POST path against a bare ASGI server, driven by wrk, in one run.

Cases (every server: uvicorn, one process, on this machine; wrk -t1 on the same machine, 64
connections for single tweets, 16 for batches of 100, 4 for batches of 1 000):
  bare             an ASGI app that reads the body and answers 202: the HTTP stack's ceiling
  up               `weathertweets up`, embedded backends: validate, gRPC to ingest, durable
                   SQLite append, 202; archiver and counter consume in the same process
  up-starlette     the same handlers and services with Starlette as the HTTP layer
  up-batch-100     `POST /api/v1/tweets` with 100 tweets per request (tweets/s)
  up-batch-1000    the same with 1 000 per request
Rounds are interleaved (each round runs every case once) and medians reported. After the last
round, every tweet a server acknowledged must be counted and archived: the bench fails if not.
Results: build/bench/results.json and a table on stdout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from weathertweets.gendata import generate

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))

BARE_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"8")]})
    await send({"type": "http.response.body", "body": b'{"id":0}'})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""

POST_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("bench: wrk is missing; install Debian's `wrk` (or run as root)")
    print("bench: installing wrk from Debian", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    return shutil.which("wrk") or "wrk"


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code in (200, 202):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


@dataclass
class Case:
    name: str
    url: str
    body: Path
    tweets_per_request: int = 1
    connections: int = CONNECTIONS
    runs: list[dict[str, float]] = field(default_factory=list)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(wrk: str, case: Case, scripts: Path) -> dict[str, float]:
    script = scripts / f"{case.name}.lua"
    script.write_text(POST_SCRIPT.replace("{body}", str(case.body)))
    command = [wrk, "-t1", f"-c{case.connections}", f"-d{SECONDS}s", "--timeout", "30s"]
    command += ["--latency", "-s", str(script)]
    done = subprocess.run([*command, case.url], capture_output=True, text=True, check=True)
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    if bad or errors:
        raise RuntimeError(f"{case.name}: wrk saw failures:\n{out}")
    return {
        "requests_per_s": rate,
        "tweets_per_s": rate * case.tweets_per_request,
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
    }


def accepted(base: str) -> int:
    metrics = httpx.get(base + "/metrics", timeout=10).text
    found = re.search(r"^weathertweets_tweets_accepted_total (\S+)$", metrics, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def wait_exact(base: str, timeout: float = 180) -> dict[str, int]:
    """Every acknowledged tweet counted and archived, or fail."""
    want = accepted(base)
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(base + "/api/v1/stats", timeout=30).json()
        if stats["total"] == stats["archived"] == want:
            return {"acknowledged": want, "counted": stats["total"], "archived": stats["archived"]}
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base}: acknowledged {want}, but {stats}")
        time.sleep(1)


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def median(case: Case, key: str) -> float:
    return statistics.median(run[key] for run in case.runs)


def main() -> int:
    wrk = ensure_wrk()
    records = generate(2000, seed=1)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        single = scratch / "single.json"
        single.write_text(json.dumps(records[0], ensure_ascii=False))
        batches = {}
        for size in (100, 1000):
            batches[size] = scratch / f"batch-{size}.json"
            batches[size].write_text(json.dumps(records[:size], ensure_ascii=False))
        ports = {name: (free_port(), free_port()) for name in ("bare", "up", "up-starlette")}
        servers = [
            start([sys.executable, "-c", BARE_APP, str(ports["bare"][0])], scratch / "bare.log"),
            start(
                [sys.executable, "-m", "weathertweets.cli", "up", "--data-dir", str(scratch / "up"),
                 "--port", str(ports["up"][0]), "--ingest-port", str(ports["up"][1])],
                scratch / "up.log",
            ),
            start(
                [sys.executable, str(ROOT / "tools" / "bench_starlette.py"),
                 "--data-dir", str(scratch / "st"), "--port", str(ports["up-starlette"][0]),
                 "--ingest-port", str(ports["up-starlette"][1])],
                scratch / "up-starlette.log",
            ),
        ]  # fmt: skip
        base = {name: f"http://127.0.0.1:{port}" for name, (port, _) in ports.items()}
        cases = [
            Case("bare", base["bare"] + "/input", single),
            Case("up", base["up"] + "/input", single),
            Case("up-starlette", base["up-starlette"] + "/input", single),
            Case("up-batch-100", base["up"] + "/api/v1/tweets", batches[100], 100, 16),
            Case("up-batch-1000", base["up"] + "/api/v1/tweets", batches[1000], 1000, 4),
        ]
        try:
            wait_ready(base["bare"] + "/")
            wait_ready(base["up"] + "/readyz")
            wait_ready(base["up-starlette"] + "/readyz")
            for round_number in range(ROUNDS):
                for case in cases:
                    case.runs.append(run_wrk(wrk, case, scratch))
                    time.sleep(1)  # let the consumers catch up a little between cases
                print(f"bench: round {round_number + 1}/{ROUNDS} done", flush=True)
            exact = {name: wait_exact(base[name]) for name in ("up", "up-starlette")}
        finally:
            for server in servers:
                server.terminate()
                server.wait(60)
    bare = median(cases[0], "requests_per_s")
    report = {
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "wrk": {"threads": 1, "seconds": SECONDS, "rounds": ROUNDS},
        "cases": {
            c.name: {
                "connections": c.connections,
                "tweets_per_s": round(median(c, "tweets_per_s")),
                "p50_ms": round(median(c, "p50_ms"), 2),
                "p99_ms": round(median(c, "p99_ms"), 2),
                "ratio_to_bare_requests": round(median(c, "requests_per_s") / bare, 3),
                "runs_tweets_per_s": [round(r["tweets_per_s"]) for r in c.runs],
            }
            for c in cases
        },
        "starlette_cost": round(
            1 - median(cases[2], "requests_per_s") / median(cases[1], "requests_per_s"), 3
        ),
        "exact": exact,
    }
    out = ROOT / "build" / "bench" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'case':<15} {'tweets/s':>10} {'÷ bare (req)':>13} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in report["cases"].items():  # type: ignore[attr-defined]
        print(
            f"{name:<15} {row['tweets_per_s']:>10} {row['ratio_to_bare_requests']:>13} "
            f"{row['p50_ms']:>8} {row['p99_ms']:>8}"
        )
    print(f"Starlette costs {report['starlette_cost']:.1%} of single-tweet throughput")
    print(f"exact: {exact}\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
