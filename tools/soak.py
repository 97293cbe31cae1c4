"""`make soak`: run `weathertweets up` at a steady rate for a long time, as an operator would
leave it, and report what drifts.

    python tools/soak.py --duration 1h --rate 1000 [--retention-hours 24] [--data-dir DIR]

Every window (`--window` seconds) wrk sends single tweets paced at about `rate` (varied texts
and countries, 32 connections), then the process is sampled: RSS, open files, threads, CPU,
the data directory's size, and what the broker's retention trimmed.
At the end it waits for the sinks, stops the service, and checks that accepted = counted =
archived (the gateway's count of 202s; wrk's own count may miss the answers in flight when a
window ends, by at most the connections per window). Results: build/soak/report.json and
build/soak/soak.svg (one chart per series).
Exit status 1 when the run was not exact, or (`--expect-trim`) the broker was never trimmed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from weathertweets.gendata import generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ensure_wrk, free_port, wrk_run

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "soak"
WARM_UP = 0.2  # the first fifth of the run is warm-up: growth is measured after it


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)?", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 90s, 3m or 1h")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def proc_status(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "Threads"):
            fields[name] = int(value.split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mb": fields["VmRSS"] // 1024,
        "threads": fields["Threads"],
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu_s": round((int(stat[11]) + int(stat[12])) / ticks, 2),
    }


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Service:
    def __init__(self, data_dir: Path, retention_hours: float) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        # Only the soak's own settings: a WT_* of the caller's shell would change what is measured.
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("WT_")},
            "WT_BROKER_RETENTION_HOURS": str(retention_hours),
            "WT_COUNTER_PORT": str(free_port()),
            "WT_ARCHIVER_PORT": str(free_port()),
            "WT_INGEST_METRICS_PORT": str(free_port()),
        }
        command = [
            str(Path(sys.executable).parent / "weathertweets"), "up", "--data-dir", str(data_dir),
            "--port", str(self.port), "--ingest-port", str(free_port()),
        ]  # fmt: skip
        self.log = (OUT / "up.log").open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"soak: `weathertweets up` exited; see {OUT / 'up.log'}")
            time.sleep(0.2)
        raise SystemExit("soak: `weathertweets up` was not ready within 60 s")

    def sample(self) -> dict[str, Any]:
        page = httpx.get(self.base + "/metrics", timeout=10).text
        files = {p.name: p.stat().st_size for p in self.data_dir.iterdir() if p.is_file()}
        return {
            **proc_status(self.process.pid),
            "data_dir_mb": round(sum(files.values()) / 1e6, 1),
            "files_mb": {name: round(size / 1e6, 2) for name, size in sorted(files.items())},
            "trimmed": int(metric(page, "weathertweets_broker_trimmed_records_total")),
            "acknowledged": int(metric(page, "weathertweets_tweets_accepted_total")),
        }

    def settle(self, accepted: int, timeout: float = 120) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        stats: dict[str, int] = {}
        while time.monotonic() < deadline:
            stats = httpx.get(self.base + "/api/v1/stats", timeout=10).json()
            if stats["total"] >= accepted and stats["archived"] >= accepted:
                break
            time.sleep(0.5)
        return {"counted": stats.get("total", -1), "archived": stats.get("archived", -1)}

    def stop(self) -> float:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()
        return round(time.monotonic() - started, 2)


def growth(values: list[float]) -> float:
    """Percent change from just after warm-up to the end (medians of three samples each)."""
    start = int(len(values) * WARM_UP)
    if len(values) - start < 6:
        return 0.0
    before, after = statistics.median(values[start : start + 3]), statistics.median(values[-3:])
    return round((after / before - 1) * 100, 1) if before else 0.0


def trim_effect(samples: list[dict[str, Any]]) -> list[float | None]:
    """Median p99 of the windows in which the broker trimmed, and of the others."""
    trimmed: list[float] = []
    quiet: list[float] = []
    for before, sample in zip([{"trimmed": 0}, *samples], samples, strict=False):
        (trimmed if sample["trimmed"] > before["trimmed"] else quiet).append(sample["p99_ms"])
    return [statistics.median(found) if found else None for found in (trimmed, quiet)]


def drive(service: Service, duration: float, rate: float, window: float) -> dict[str, Any]:
    wrk = ensure_wrk()
    scratch = Path(tempfile.mkdtemp(prefix="soak-wrk-"))
    bodies = scratch / "tweets.ndjson"
    lines = (json.dumps(r, ensure_ascii=False) for r in generate(5000, seed=7))
    bodies.write_text("\n".join(lines) + "\n")
    connections = 32
    pace_ms = connections * 1000 / rate
    samples: list[dict[str, Any]] = []
    accepted = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < duration:
        span = max(1, round(min(window, duration - elapsed)))
        run = wrk_run(wrk, service.base + "/input", bodies, connections, span, scratch, pace_ms)
        accepted += int(run["requests"])  # wrk_run fails the run on any non-2xx answer
        # wrk pauses `pace_ms` after each answer, so the answer's own time slows the rate down:
        # steer the pause by what the window achieved.
        pace_ms = max(1.0, pace_ms * run["requests_per_s"] / rate)
        sample = {
            "t_s": round(time.monotonic() - started, 1),
            "accepted": accepted,
            "rate": round(run["requests_per_s"]),
            "p50_ms": run["p50_ms"],
            "p99_ms": run["p99_ms"],
            **service.sample(),
        }
        samples.append(sample)
        print(
            f"soak {sample['t_s']:>7.0f} s  {accepted:>9} accepted  {sample['rate']:>5}/s"
            f"  p99 {sample['p99_ms']:>6} ms  RSS {sample['rss_mb']} MB"
            f"  data {sample['data_dir_mb']} MB  trimmed {sample['trimmed']}",
            flush=True,
        )
    # wrk counts the answers it read; a request in flight when a window ends is answered too.
    return {"accepted": accepted, "in_flight_bound": connections * len(samples), "samples": samples}


def chart(samples: list[dict[str, Any]]) -> str:
    """Four small line charts against time, as SVG."""
    series = [("RSS MB", "rss_mb"), ("data dir MB", "data_dir_mb"), ("p99 ms", "p99_ms"),
              ("open files", "fds")]  # fmt: skip
    width, height, pad = 420, 160, 36
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{2 * height}"'
             ' font-family="sans-serif" font-size="11">']  # fmt: skip
    times = [s["t_s"] for s in samples] or [0]
    for index, (title, key) in enumerate(series):
        left, top = (index % 2) * width, (index // 2) * height
        values = [float(s[key]) for s in samples] or [0.0]
        high = max(values) * 1.1 or 1.0
        span = max(times[-1], 1)
        points = " ".join(
            f"{left + pad + (t / span) * (width - 2 * pad):.1f},"
            f"{top + height - pad + -(v / high) * (height - 2 * pad):.1f}"
            for t, v in zip(times, values, strict=True)
        )
        parts += [
            f'<text x="{left + pad}" y="{top + 16}">{title} (max {max(values):g})</text>',
            f'<line x1="{left + pad}" y1="{top + height - pad}" x2="{left + width - pad}"'
            f' y2="{top + height - pad}" stroke="#999"/>',
            f'<text x="{left + width - pad}" y="{top + height - pad + 14}" text-anchor="end">'
            f"{span:.0f} s</text>",
            f'<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{points}"/>',
        ]
    return "\n".join([*parts, "</svg>"]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=seconds, default=seconds("3m"))
    parser.add_argument("--rate", type=float, default=1000.0, help="single tweets a second")
    parser.add_argument("--window", type=seconds, default=None, help="seconds per sample")
    parser.add_argument("--retention-hours", type=float, default=24.0)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: a fresh temporary one"
    )
    parser.add_argument("--expect-trim", action="store_true", help="fail unless the broker trimmed")
    args = parser.parse_args()
    window = args.window or max(5.0, min(60.0, args.duration / 30))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the service on the way out
    OUT.mkdir(parents=True, exist_ok=True)
    if args.data_dir is not None and args.data_dir.exists() and any(args.data_dir.iterdir()):
        parser.error(f"{args.data_dir} is not empty: the soak counts from an empty data dir")
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        data_dir = args.data_dir or Path(scratch) / "data"
        service = Service(data_dir, args.retention_hours)
        try:
            driven = drive(service, args.duration, args.rate, window)
            sinks = service.settle(service.sample()["acknowledged"])
            last = service.sample()
        finally:
            stop_s = service.stop()
    samples = driven["samples"]
    accepted = driven["accepted"]
    report = {
        "duration_s": args.duration,
        "rate": args.rate,
        "retention_hours": args.retention_hours,
        "accepted": accepted,
        **sinks,
        "acknowledged_by_gateway": last["acknowledged"],
        "exact": sinks["counted"] == last["acknowledged"] == sinks["archived"]
        and accepted <= last["acknowledged"] <= accepted + driven["in_flight_bound"],
        "trimmed": last["trimmed"],
        "stop_s": stop_s,
        "rss_growth_pct_after_warm_up": growth([s["rss_mb"] for s in samples]),
        "fds": [samples[0]["fds"], samples[-1]["fds"]] if samples else [],
        "threads": [samples[0]["threads"], samples[-1]["threads"]] if samples else [],
        "bytes_per_million_tweets": {
            name: round(mb * 1e6 / accepted * 1e6) for name, mb in last["files_mb"].items()
        } if accepted else {},
        "p99_ms_first_last": [samples[0]["p99_ms"], samples[-1]["p99_ms"]] if samples else [],
        "p99_ms_median_windows_with_and_without_trim": trim_effect(samples),
        "cpu_us_per_tweet": round(last["cpu_s"] / accepted * 1e6, 1) if accepted else 0,
        "samples": samples,
    }  # fmt: skip
    (OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "soak.svg").write_text(chart(samples))
    shown = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(shown, indent=2))
    print(f"soak: report in {OUT / 'report.json'}, chart in {OUT / 'soak.svg'}")
    failed = not report["exact"] or (args.expect_trim and not report["trimmed"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
