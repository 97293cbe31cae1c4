"""`make soak`, three minutes of it: `weathertweets up` at a steady rate stays exact while the
embedded broker's retention trims the log under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def test_three_minutes_at_a_steady_rate_are_exact_and_the_broker_is_trimmed() -> None:
    # Retention of 36 s: records leave the log within the run once both groups committed them.
    command = [
        sys.executable, str(ROOT / "tools" / "soak.py"), "--duration", "3m", "--rate", "300",
        "--window", "15", "--retention-hours", "0.01", "--expect-trim",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("WT_")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((ROOT / "build" / "soak" / "report.json").read_text())
    assert report["exact"] and report["counted"] == report["archived"] > 150 * 300
    assert report["trimmed"] > 0
    with_trim, without = report["p99_ms_median_windows_with_and_without_trim"]
    assert with_trim is not None and without is not None  # both kinds of window happened
    held = 300 * (0.01 * 3600 + 30 + 15) * 2  # retention + one trim interval + a window, doubled
    assert report["samples"][-1]["files_mb"]["broker.db"] * 1e6 < held * 400  # ~400 B a record
