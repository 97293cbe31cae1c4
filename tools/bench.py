"""`make bench`: the write path against a bare ASGI server, driven by wrk, in one interleaved run.

Servers (each on this machine, started and stopped by the bench):
  bare    an ASGI app on the same server (uvicorn + uvloop, one process) that reads the body and
          answers 202: the ceiling of the HTTP stack here
  up      `weathertweets up`, embedded backends, one process
  up-w2   `weathertweets up --workers 2`: two gateway processes, ingest and consumers in a third
  stack   `weathertweets stack` on the real engines of `make services` (Kafka, MongoDB-wire,
          Redis), its gateway with two workers producing straight to Kafka (skipped when the
          engines are not running, or with BENCH_STACK=0)
Cases run wrk -t1 for BENCH_SECONDS each, each on a quiet machine (90 % idle, waited for up to
30 s); rounds are interleaved (each round runs every case once) and medians reported. Per
case: tweets/s, its ratio to bare at the same connections, p50/p99, CPU µs per tweet and peak
RSS of each service's processes, and the time until the sinks caught up (archived = counted ≥
acknowledged). Afterwards, for up and stack: freshness (the end-to-end histogram's p50/p99 at
half the single-tweet maximum, paced by wrk) and the latency of
GET /api/v1/stats. Before the first case, each server's memory at rest: RSS and PSS per
process, their sums, and the group's memory with each page counted once (a sum of RSS counts a
shared library once per process; a sum of PSS depends on what else maps it). Every tweet wrk
saw acknowledged must be archived and counted, and no more than were in flight when wrk stopped
may be extra: the bench fails otherwise.

Environment: BENCH_ROUNDS (3), BENCH_SECONDS (10), BENCH_ONLY (comma-separated case names),
BENCH_STACK (1), BENCH_STACK_WORKERS (2) and BENCH_STACK_PUBLISH (broker, or ingest: through
the gRPC hop, as the Helm chart deploys it), BENCH_STATS_AT (0: else fill the stack's archive to
this many tweets first and time /api/v1/stats there).
Results: build/bench/results.json and a table on stdout; the servers' logs in build/bench/logs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from weathertweets.gendata import generate

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
# The app's energy model defaults (weathertweets.energy): watts of an idle and a busy vCPU.
WATTS_IDLE, WATTS_BUSY = 0.71, 4.26
ONLY = {n for n in os.environ.get("BENCH_ONLY", "").split(",") if n}
WITH_STACK = os.environ.get("BENCH_STACK", "1") != "0"
STATS_AT = int(os.environ.get("BENCH_STATS_AT", "0"))
STACK_WORKERS = os.environ.get("BENCH_STACK_WORKERS", "2")
STACK_PUBLISH = os.environ.get("BENCH_STACK_PUBLISH", "broker")
REST_SECONDS = 10  # after every server is ready, before the first case: memory at rest
# Before each case the machine must be this idle (a share of all CPUs over a QUIET_WINDOW),
# waited for at most QUIET_MAX seconds: what a case leaves behind (an engine compacting, a
# sink catching up) is not charged to the next one.
QUIET_IDLE, QUIET_WINDOW, QUIET_MAX = 0.9, 0.5, 30.0
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

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
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            loop="uvloop", http="httptools")
"""

POST_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
{pace}
"""
# An NDJSON body file: one tweet per line, sent in turn (varied texts and countries).
ROTATING_SCRIPT = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local bodies = {}
for line in io.lines("{body}") do bodies[#bodies + 1] = line end
local turn = 0
request = function()
  turn = turn % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[turn])
end
{pace}
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


def engines() -> dict[str, str] | None:
    """The real engines' URLs from `make services`, when they answer."""
    env_file = ROOT / ".services.env"
    if not WITH_STACK or not env_file.exists():
        return None
    found = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    for url in (found.get("WT_BROKER_URL", ""), found.get("WT_COUNTER_URL", "")):
        host, port = re.search(r"//([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return None
    return found


# Processes ----------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """pid and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def service_of(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in args]
    if "serve" in words:
        return words[words.index("serve") + 1]
    for name in ("up", "stack"):
        if name in words:
            return name
    return "server"


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    by_service: dict[str, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used = (int(fields[11]) + int(fields[12])) / CLOCK_TICK
        name = service_of(pid)
        by_service[name] = by_service.get(name, 0.0) + used
    return by_service


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS): PSS shares each page among the processes that map it, so PSS adds up to
    what a group of processes occupies, where RSS counts shared libraries once per process."""
    found = {"Rss:": 0.0, "Pss:": 0.0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(" ")
            if name in found:
                found[name] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return found["Rss:"], found["Pss:"]


def resident_once_mb(pids: list[int]) -> float:
    """What a group of processes holds in memory, each page once: every process's private
    pages, plus each mapped file's shared pages once (the most any one process has of it).
    Unlike a sum of PSS it does not depend on what else runs beside the group."""
    private = 0
    shared: dict[str, int] = {}
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
        except OSError:
            continue
        mine: dict[str, int] = {}
        mapping = ""
        for line in lines:
            key, _, rest = line.partition(" ")
            if not key.endswith(":"):  # a mapping's header: address perms offset dev inode path
                parts = line.split(None, 5)
                mapping = parts[5] if len(parts) == 6 else f"[anonymous of {pid}]"
            elif key in ("Private_Clean:", "Private_Dirty:"):
                private += int(rest.split()[0])
            elif key in ("Shared_Clean:", "Shared_Dirty:"):
                mine[mapping] = mine.get(mapping, 0) + int(rest.split()[0])
        for mapping, kb in mine.items():
            shared[mapping] = max(shared.get(mapping, 0), kb)
    return (private + sum(shared.values())) / 1024


def at_rest(root: int) -> dict[str, object]:
    """Memory of a server's processes once it is ready and idle."""
    pids = tree(root)
    processes = {}
    for pid in pids:
        rss, pss = memory_mb(pid)
        processes[f"{service_of(pid)}:{pid}"] = {"rss_mb": round(rss, 1), "pss_mb": round(pss, 1)}
    return {
        "processes": processes,
        "rss_mb": round(sum(p["rss_mb"] for p in processes.values())),
        "pss_mb": round(sum(p["pss_mb"] for p in processes.values())),
        "resident_once_mb": round(resident_once_mb(pids)),
    }


class PeakRss(threading.Thread):
    """Samples the RSS of a process tree every 0.5 s: peak per process, grouped by service."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            for pid in tree(self.root):
                name = service_of(pid)
                self.peak[name] = max(self.peak.get(name, 0.0), rss_mb(pid))


@dataclass
class Server:
    name: str
    command: list[str]
    base: str
    env: dict[str, str] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)  # /metrics URLs with the e2e histogram
    # MongoDB's archived count is an estimate on FerretDB: progress is read from the consumers'
    # processed counters, and the final check counts the archive itself.
    mongo_url: str = ""
    process: subprocess.Popen[bytes] | None = None
    acknowledged: int = 0
    in_flight_bound: int = 0
    # Only the HTTP → Kafka edge (the peer's shape): exactness is the topic's record count.
    kafka_topic: str = ""
    kafka_url: str = ""

    def start(self, log: Path) -> None:
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )

    def wait_ready(self, path: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited while starting")
            try:
                if httpx.get(self.base + path, timeout=1).status_code in (200, 202):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(self.base + "/api/v1/stats", timeout=30).json())

    def processed(self) -> int:
        """The fewest records either consumer group has processed."""
        pattern = re.compile(
            r"^weathertweets_records_processed_total\{group=\"(\w+)\"\} (\S+)$", re.M
        )
        found: dict[str, float] = {}
        for url in self.metrics:
            for group, value in pattern.findall(httpx.get(url, timeout=10).text):
                found[group] = found.get(group, 0.0) + float(value)
        return int(min(found.get("archiver", 0.0), found.get("counter", 0.0)))

    def caught_up(self, timeout: float = 300) -> float:
        """Seconds until archived = counted ≥ acknowledged."""
        started = time.monotonic()
        while True:
            stats = self.stats()
            total = int(stats["total"])  # type: ignore[call-overload]
            at = time.monotonic()
            if self.mongo_url:
                # A record read twice (a rebalance) counts twice as processed: the engine's own
                # count confirms (the stats' count is refreshed behind its readers, so it lags).
                done = (
                    min(total, self.processed()) >= self.acknowledged
                    and archive_size(self.mongo_url) >= self.acknowledged
                )
            else:
                done = stats["total"] == stats["archived"] and total >= self.acknowledged
            if done:
                return at - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{self.name}: acknowledged {self.acknowledged}, but {stats}")
            time.sleep(0.1)


@dataclass
class Case:
    name: str
    server: Server
    path: str
    body: Path
    tweets_per_request: int = 1
    connections: int = 64
    runs: list[dict[str, object]] = field(default_factory=list)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk_run(
    wrk: str,
    url: str,
    body: Path,
    connections: int,
    seconds: int,
    scripts: Path,
    pace_ms: float = 0,
) -> dict[str, float]:
    script = scripts / f"post-{body.stem}-{pace_ms:g}.lua"
    pace = f"function delay() return {pace_ms:g} end" if pace_ms else ""
    template = ROTATING_SCRIPT if body.suffix == ".ndjson" else POST_SCRIPT
    script.write_text(template.replace("{body}", str(body)).replace("{pace}", pace))
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s"]
    done = subprocess.run(
        [*command, "--latency", "-s", str(script), url], capture_output=True, text=True, check=True
    )
    out = done.stdout
    if re.search(r"Non-2xx or 3xx responses|Socket errors", out):
        raise RuntimeError(f"{url}: wrk saw failures:\n{out}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if len(latency) != 2:
        raise RuntimeError(f"{url}: no latency distribution in wrk's output:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "requests": requests,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
    }


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of the whole machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; without guest time


def quiet(
    idle: float = QUIET_IDLE, window: float = QUIET_WINDOW, limit: float = QUIET_MAX
) -> dict[str, float]:
    """Wait until the machine is `idle` over `window`, at most `limit` s: {waited_s, idle}."""
    started = time.monotonic()
    while True:
        idle_0, total_0 = _cpu_times()
        time.sleep(window)
        idle_1, total_1 = _cpu_times()
        share = (idle_1 - idle_0) / max(1, total_1 - total_0)
        waited = time.monotonic() - started
        if share >= idle or waited >= limit:
            if share < idle:
                print(f"bench: the machine is only {share:.0%} idle; going on", flush=True)
            return {"waited_s": round(waited, 1), "idle": round(share, 3)}


def engine_pids() -> dict[str, int]:
    """The engines `make services` runs (Kafka, Redis, the MongoDB-wire server, Prometheus)."""
    return {f.stem: int(f.read_text().strip()) for f in (ROOT / ".cache" / "run").glob("*.pid")}


def engine_cpu() -> dict[str, float]:
    found: dict[str, float] = {}
    for name, pid in engine_pids().items():
        found[f"engine:{name}"] = sum(cpu_seconds([pid]).values())
    return found


def run_case(wrk: str, case: Case, scripts: Path) -> dict[str, object]:
    server = case.server
    assert server.process is not None
    settled = quiet()
    pids = tree(server.process.pid)
    before = cpu_seconds(pids)
    if server.name in ("stack", "edge"):
        before |= engine_cpu()
    sampler = PeakRss(server.process.pid)
    sampler.start()
    url = server.base + case.path
    result: dict[str, object] = dict(
        wrk_run(wrk, url, case.body, case.connections, SECONDS, scripts)
    )
    sampler.done.set()
    sampler.join()
    after = cpu_seconds(tree(server.process.pid))
    if server.name in ("stack", "edge"):
        after |= engine_cpu()
    tweets = int(result["requests"]) * case.tweets_per_request  # type: ignore[call-overload]
    server.acknowledged += tweets
    server.in_flight_bound += case.connections * case.tweets_per_request
    result["tweets_per_s"] = float(result["requests_per_s"]) * case.tweets_per_request  # type: ignore[arg-type]
    cpu = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    result["cpu_us_per_tweet"] = {n: round(s / tweets * 1e6, 1) for n, s in cpu.items() if tweets}
    ours = sum(v for n, v in cpu.items() if not n.startswith("engine:"))
    result["cpu_us_per_tweet_total"] = round(ours / tweets * 1e6, 1) if tweets else 0
    result["peak_rss_mb"] = {n: round(mb) for n, mb in sampler.peak.items()}
    result["quiet_before"] = settled
    if server.name != "bare" and not server.kafka_topic:
        result["caught_up_s"] = round(server.caught_up(), 2)
    return result


# Freshness ----------------------------------------------------------------------------------


def histogram(urls: list[str]) -> dict[str, dict[float, float]]:
    """{group: {upper bound: cumulative count}} of weathertweets_end_to_end_seconds."""
    found: dict[str, dict[float, float]] = {}
    pattern = re.compile(
        r'^weathertweets_end_to_end_seconds_bucket\{group="([^"]+)",le="([^"]+)"\} (\S+)$',
        re.MULTILINE,
    )
    for url in urls:
        for group, bound, count in pattern.findall(httpx.get(url, timeout=10).text):
            buckets = found.setdefault(group, {})
            buckets[float(bound)] = buckets.get(float(bound), 0.0) + float(count)
    return found


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile (ms) of the observations between two snapshots, interpolated in its bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower * 1000
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, cumulative
    return lower * 1000


def freshness(
    wrk: str, server: Server, body: Path, rate: float, scripts: Path
) -> dict[str, object]:
    """wrk paced to about `rate` requests/s (32 connections, a pause between requests)."""
    connections = 32
    pace = connections * 1000 / rate
    before = histogram(server.metrics)
    result = wrk_run(wrk, server.base + "/input", body, connections, SECONDS, scripts, pace)
    server.acknowledged += int(result["requests"])
    server.in_flight_bound += connections
    server.caught_up()
    after = histogram(server.metrics)
    return {
        "target_per_s": round(rate),
        "requests_per_s": round(result["requests_per_s"]),
        "http_p99_ms": result["p99_ms"],
        **{
            group: {
                "p50_ms": round(quantile(before.get(group, {}), counts, 0.5), 1),
                "p99_ms": round(quantile(before.get(group, {}), counts, 0.99), 1),
            }
            for group, counts in sorted(after.items())
        },
    }


def efficiency(
    wrk: str, server: Server, body: Path, peak: float, scripts: Path
) -> dict[str, dict[str, float]]:
    """CPU µs and joules (the app's energy model) per tweet at 10 %, 40 % and 100 % of `peak`
    requests/s, with wrk paced as in `freshness`; CPU counted until the sinks caught up."""
    assert server.process is not None
    found = {}
    for share in (0.1, 0.4, 1.0):
        connections = 32
        pace = connections * 1000 / (peak * share) if share < 1 else 0
        pids = tree(server.process.pid)
        before, started = sum(cpu_seconds(pids).values()), time.monotonic()
        result = wrk_run(wrk, server.base + "/input", body, connections, SECONDS, scripts, pace)
        server.acknowledged += int(result["requests"])
        server.in_flight_bound += connections
        server.caught_up()
        cpu = sum(cpu_seconds(tree(server.process.pid)).values()) - before
        wall = time.monotonic() - started
        joules = cpu * (WATTS_BUSY - WATTS_IDLE) + wall * WATTS_IDLE
        tweets = int(result["requests"])
        found[f"{share:.0%}"] = {
            "tweets_per_s": round(result["requests_per_s"]),
            "cpu_us_per_tweet": round(cpu / tweets * 1e6, 1),
            "joules_per_1000": round(joules / tweets * 1000, 2),
            "http_p99_ms": result["p99_ms"],
        }
    return found


def stats_latency(server: Server, times: int = 30) -> dict[str, float]:
    server.stats()  # the first read may wait for the count; the readers after it do not
    took = []
    with httpx.Client(base_url=server.base, timeout=30) as client:
        for _ in range(times):
            started = time.perf_counter()
            client.get("/api/v1/stats").raise_for_status()
            took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return {
        "archived": int(server.stats()["archived"]),  # type: ignore[call-overload]
        "median_ms": round(statistics.median(took), 1),
        "max_ms": round(took[-1], 1),
    }


def fill(wrk: str, server: Server, body: Path, target: int, scripts: Path) -> None:
    """Batches of 1 000 until the archive holds `target` tweets."""
    while int(server.stats()["archived"]) < target:  # type: ignore[call-overload]
        result = wrk_run(wrk, server.base + "/api/v1/tweets", body, 4, 10, scripts)
        server.acknowledged += int(result["requests"]) * 1000
        server.in_flight_bound += 4000
        server.caught_up(900)
        print(f"bench: stack archive at {server.stats()['archived']}", flush=True)


# The run ------------------------------------------------------------------------------------


def servers(scratch: Path, real: dict[str, str] | None) -> dict[str, Server]:
    cli = [sys.executable, "-m", "weathertweets.cli"]
    made: dict[str, Server] = {}
    port = free_port()
    made["bare"] = Server(
        "bare", [sys.executable, "-c", BARE_APP, str(port)], f"http://127.0.0.1:{port}"
    )
    for name, workers in (("up", 1), ("up-w2", 2)):
        port, ingest, ops = free_port(), free_port(), free_port()
        args = ["up", "--data-dir", str(scratch / name), "--port", str(port)]
        base = f"http://127.0.0.1:{port}"
        made[name] = Server(
            name,
            [*cli, *args, "--ingest-port", str(ingest), "--workers", str(workers)],
            base,
            {"WT_INGEST_METRICS_PORT": str(ops)},
            [f"{base}/metrics" if workers == 1 else f"http://127.0.0.1:{ops}/metrics"],
        )
    if real is not None:
        tag = f"bench{int(time.time())}{secrets.token_hex(2)}"
        ports = {k: free_port() for k in ("port", "ingest", "archiver", "counter", "metrics")}
        redis = re.sub(r"/\d*$", "", real["WT_COUNTER_URL"].rstrip("/")) + "/13"
        mongo = real["WT_STORE_URL"].rsplit("/", 1)[0] + f"/{tag}"
        env = {
            "WT_BROKER_URL": real["WT_BROKER_URL"],
            "WT_STORE_URL": mongo,
            "WT_COUNTER_URL": redis,
            "WT_TOPIC": tag,
            "WT_COUNTER_PREFIX": f"{tag}:",
            "WT_PORT": str(ports["port"]),
            "WT_INGEST_PORT": str(ports["ingest"]),
            "WT_ARCHIVER_PORT": str(ports["archiver"]),
            "WT_COUNTER_PORT": str(ports["counter"]),
            "WT_INGEST_METRICS_PORT": str(ports["metrics"]),
            "WT_WORKERS": STACK_WORKERS,
            "WT_GATEWAY_PUBLISH": STACK_PUBLISH,
        }
        edge = f"{tag}e"
        edge_port = free_port()
        made["edge"] = Server(
            "edge",
            [*cli, "serve", "gateway", "--data-dir", str(scratch / "edge")],
            f"http://127.0.0.1:{edge_port}",
            {
                **env,
                "WT_TOPIC": edge,
                "WT_PORT": str(edge_port),
                "WT_GATEWAY_PUBLISH": "broker",
                "WT_INGEST_METRICS_PORT": str(free_port()),
            },
            kafka_topic=edge,
            kafka_url=real["WT_BROKER_URL"],
        )
        made["stack"] = Server(
            "stack",
            [*cli, "stack", "--data-dir", str(scratch / "stack")],
            f"http://127.0.0.1:{ports['port']}",
            env,
            [f"http://127.0.0.1:{ports[k]}/metrics" for k in ("archiver", "counter")],
            mongo,
        )
    return made


def cases(made: dict[str, Server], single: Path, batch: dict[int, Path]) -> list[Case]:
    found = [
        Case("bare-64", made["bare"], "/input", single),
        Case("bare-256", made["bare"], "/input", single, connections=256),
        Case("up", made["up"], "/input", single),
        Case("up-w2", made["up-w2"], "/input", single),
        Case("up-w2-batch-100", made["up-w2"], "/api/v1/tweets", batch[100], 100, 16),
        Case("up-w2-batch-1000", made["up-w2"], "/api/v1/tweets", batch[1000], 1000, 4),
    ]
    if "stack" in made:
        stack = made["stack"]
        found += [
            Case("bare-1024", made["bare"], "/input", single, connections=1024),
            Case("stack-64", stack, "/input", single),
            Case("stack-256", stack, "/input", single, connections=256),
            Case("stack-1024", stack, "/input", single, connections=1024),
            Case("stack-batch-100", stack, "/api/v1/tweets", batch[100], 100, 64),
            Case("stack-batch-1000", stack, "/api/v1/tweets", batch[1000], 1000, 4),
            Case("edge-256", made["edge"], "/input", single, connections=256),
            Case("edge-1024", made["edge"], "/input", single, connections=1024),
            Case("edge-batch-100", made["edge"], "/api/v1/tweets", batch[100], 100, 64),
        ]
    return [c for c in found if not ONLY or c.name in ONLY or c.name.startswith("bare")]


def median(case: Case, key: str) -> float:
    return float(statistics.median(float(run[key]) for run in case.runs))  # type: ignore[arg-type]


def summary(case: Case, bare: dict[int, list[float]]) -> dict[str, object]:
    """`bare`: the bare app's tweets/s in each round, by connections. The ratio is of the
    medians; `ratio_by_round` pairs each round with the bare run of the same round."""
    rounds = bare.get(case.connections) or bare.get(64) or []
    baseline = statistics.median(rounds) if rounds else 0.0
    row: dict[str, object] = {
        "connections": case.connections,
        "tweets_per_request": case.tweets_per_request,
        "tweets_per_s": round(median(case, "tweets_per_s")),
        "ratio_to_bare": round(median(case, "tweets_per_s") / baseline, 3) if baseline else None,
        "p50_ms": round(median(case, "p50_ms"), 2),
        "p99_ms": round(median(case, "p99_ms"), 2),
        "cpu_us_per_tweet": round(median(case, "cpu_us_per_tweet_total"), 1),
        "runs_tweets_per_s": [round(float(r["tweets_per_s"])) for r in case.runs],  # type: ignore[arg-type]
        "ratio_by_round": [
            round(float(r["tweets_per_s"]) / b, 3) if b else None  # type: ignore[arg-type]
            for r, b in zip(case.runs, rounds, strict=True)
        ],
        "quiet_before": [r["quiet_before"] for r in case.runs],
    }
    per_service: dict[str, list[float]] = {}
    for run in case.runs:
        for name, value in run["cpu_us_per_tweet"].items():  # type: ignore[attr-defined]
            per_service.setdefault(name, []).append(value)
    row["cpu_us_per_tweet_by_service"] = {
        n: round(statistics.median(v), 1) for n, v in per_service.items()
    }
    row["peak_rss_mb"] = {
        name: max(r["peak_rss_mb"].get(name, 0) for r in case.runs)  # type: ignore[attr-defined]
        for name in case.runs[-1]["peak_rss_mb"]  # type: ignore[attr-defined]
    }
    if "caught_up_s" in case.runs[0]:
        row["caught_up_s"] = max(float(r["caught_up_s"]) for r in case.runs)  # type: ignore[arg-type]
    return row


def engine_rss() -> dict[str, float]:
    return {name: round(rss_mb(pid)) for name, pid in engine_pids().items()}


def main() -> int:
    wrk = ensure_wrk()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    real = engines()
    if real is None:
        print("bench: the real engines are not running (make services): no stack cases")
    records = generate(2000, seed=1)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        single = scratch / "single.json"
        single.write_text(json.dumps(records[0], ensure_ascii=False))
        batch = {}
        for size in (100, 1000):
            batch[size] = scratch / f"batch-{size}.json"
            batch[size].write_text(json.dumps(records[:size], ensure_ascii=False))
        made = servers(scratch, real)
        chosen = cases(made, single, batch)
        used = {c.server.name for c in chosen}
        report: dict[str, Any] = {}
        try:
            for name in used:
                made[name].start(scratch / f"{name}.log")
            for name in used:
                made[name].wait_ready("/" if name == "bare" else "/readyz")
            time.sleep(REST_SECONDS)
            report["at_rest"] = {
                name: at_rest(made[name].process.pid)  # type: ignore[union-attr]
                for name in sorted(used)
            }
            for number in range(ROUNDS):
                for case in chosen:
                    case.runs.append(run_case(wrk, case, scratch))
                print(f"bench: round {number + 1}/{ROUNDS} done", flush=True)
            bare = {
                c.connections: [float(r["tweets_per_s"]) for r in c.runs]  # type: ignore[arg-type]
                for c in chosen
                if c.server.name == "bare"
            }
            report["cases"] = {c.name: summary(c, bare) for c in chosen}
            report["freshness"] = {}
            report["stats_latency"] = {}
            for name, reference in (("up", "up"), ("stack", "stack-64")):
                if name in used and reference in report["cases"]:
                    peak = report["cases"][reference]["tweets_per_s"]
                    report["freshness"][name] = freshness(
                        wrk, made[name], single, peak / 2, scratch
                    )
            if "up" in used and "up" in report["cases"]:
                peak = report["cases"]["up"]["tweets_per_s"]
                report["efficiency"] = {"up": efficiency(wrk, made["up"], single, peak, scratch)}
            if STATS_AT and "stack" in used:
                fill(wrk, made["stack"], batch[1000], STATS_AT, scratch)
            for name in used - {"bare", "edge"}:
                report["stats_latency"][name] = stats_latency(made[name])
            report["exact"] = {name: exact(made[name]) for name in sorted(used - {"bare"})}
            report["engines_rss_mb"] = engine_rss() if real else {}
        finally:
            for name in used:
                made[name].stop()
            keep_logs(scratch)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    report["wrk"] = {"threads": 1, "seconds": SECONDS, "rounds": ROUNDS}
    report["stack"] = {"gateway_workers": STACK_WORKERS, "gateway_publish": STACK_PUBLISH}
    out = ROOT / "build" / "bench" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_table(report)
    print(f"written to {out}")
    return 0


def keep_logs(scratch: Path) -> None:
    """Every server's log (the stack's one per service) to build/bench/logs, the last run's."""
    kept = ROOT / "build" / "bench" / "logs"
    shutil.rmtree(kept, ignore_errors=True)
    for log in scratch.rglob("*.log"):
        target = kept / log.relative_to(scratch)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)


def archive_size(mongo_url: str) -> int:
    """The archive's document count from the engine's collection statistics (no document read)."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    with client:
        found = client.get_default_database()["register"].aggregate([{"$collStats": {"count": {}}}])
        return sum(int(shard["count"]) for shard in found)  # type: ignore[call-overload]


def archive_count(mongo_url: str) -> int:
    """Every document of the bench's archive, read and counted one by one (once, at the end).
    Not `count_documents`: FerretDB answers it with an aggregation that holds the whole
    collection in its memory (23 GB at about 12 M tweets); a cursor of ids streams."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(
        mongo_url, serverSelectionTimeoutMS=5000, socketTimeoutMS=600_000
    )
    with client:
        ids = client.get_default_database()["register"].find({}, {"_id": 1}, batch_size=20_000)
        return sum(1 for _ in ids)


def topic_records(kafka_url: str, topic: str) -> int:
    """Records in a topic: the sum over its partitions of the high watermark minus the low."""
    from confluent_kafka import Consumer, TopicPartition

    bootstrap = kafka_url.removeprefix("kafka://").split("?")[0]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for number in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def exact(server: Server) -> dict[str, int]:
    if server.kafka_topic:
        stored = topic_records(server.kafka_url, server.kafka_topic)
        if not 0 <= stored - server.acknowledged <= server.in_flight_bound:
            raise RuntimeError(
                f"{server.name}: acknowledged {server.acknowledged}, {stored} in the topic, "
                f"at most {server.in_flight_bound} were in flight"
            )
        return {"acknowledged": server.acknowledged, "in_topic": stored}
    server.caught_up()
    stats = server.stats()
    counted, archived = int(stats["total"]), int(stats["archived"])  # type: ignore[call-overload]
    if server.mongo_url:
        archived = archive_count(server.mongo_url)
    extra = counted - server.acknowledged
    if counted != archived or not 0 <= extra <= server.in_flight_bound:
        raise RuntimeError(
            f"{server.name}: acknowledged {server.acknowledged}, counted {counted}, "
            f"archived {archived}, at most {server.in_flight_bound} were in flight"
        )
    return {"acknowledged": server.acknowledged, "counted": counted, "archived": archived}


def print_table(report: dict[str, Any]) -> None:
    head = f"{'case':<18} {'conns':>5} {'tweets/s':>9} {'÷ bare':>7} {'p50 ms':>7} {'p99 ms':>8}"
    print(f"\n{head} {'µs CPU/tweet':>12} {'caught up s':>11}  peak RSS MB")
    for name, row in report["cases"].items():
        ratio = "" if row["ratio_to_bare"] is None else f"{row['ratio_to_bare']:.2f}"
        rss = " ".join(f"{k}={v}" for k, v in row["peak_rss_mb"].items())
        print(
            f"{name:<18} {row['connections']:>5} {row['tweets_per_s']:>9} {ratio:>7} "
            f"{row['p50_ms']:>7} {row['p99_ms']:>8} {row['cpu_us_per_tweet']:>12} "
            f"{row.get('caught_up_s', ''):>11}  {rss}"
        )
    print("\nrounds, tweets/s and ÷ bare of the same round:")
    for name, row in report["cases"].items():
        ratios = " / ".join("—" if r is None else f"{r:.2f}" for r in row["ratio_by_round"])
        print(f"  {name:<18} {' / '.join(map(str, row['runs_tweets_per_s']))}  ({ratios})")
    for name, fresh in report["freshness"].items():
        print(f"freshness {name}: {fresh}")
    for name, shares in report.get("efficiency", {}).items():
        for share, figures in shares.items():
            print(f"efficiency {name} at {share} of peak: {figures}")
    for name, took in report["stats_latency"].items():
        print(f"GET /api/v1/stats on {name}: {took}")
    print(f"exact: {report['exact']}")
    if report.get("engines_rss_mb"):
        print(f"engines RSS MB: {report['engines_rss_mb']}")
    for name, rest in report.get("at_rest", {}).items():
        print(
            f"at rest {name}: {len(rest['processes'])} processes, RSS summed "
            f"{rest['rss_mb']} MB, each page once {rest['resident_once_mb']} MB "
            f"({rest['resident_once_mb'] / 1.048576:.0f} MiB), PSS summed {rest['pss_mb']} MB"
        )


if __name__ == "__main__":
    sys.exit(main())
