"""The sinks of a `stack` wait while its intake is busy: the sink's side (`Deferral`, the
consumer loop), the supervisor's (`IntakeWatch`), and the signals between real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port
from tests.test_supervision import Letters, ScriptedConsumer, _values
from weathertweets.config import Settings
from weathertweets.domain import Tweet
from weathertweets.metrics import DEFERRED
from weathertweets.ports import Message
from weathertweets.runtime import run
from weathertweets.services import deferral
from weathertweets.services.consuming import Sink, consume
from weathertweets.services.deferral import BUSY, FREE, Deferral, IntakeWatch, cpu_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sink_waits_while_told_busy_and_goes_on_when_told_free() -> None:
    clock = Clock()
    held = Deferral(clock)
    assert held.pause() == 0.0  # nobody said anything: work
    held.busy()
    assert 0 < held.pause() <= deferral.STEP
    held.free()
    assert held.pause() == 0.0


def test_a_busy_signal_lapses_unless_renewed() -> None:
    clock = Clock()
    held = Deferral(clock)
    held.busy()
    clock.now += deferral.LEASE / 2
    assert held.pause() > 0
    clock.now += deferral.LEASE / 2
    assert held.pause() == 0.0  # the supervisor stopped renewing it (or died)


def test_a_sink_never_waits_longer_than_longest_then_works_for_run() -> None:
    clock = Clock()
    held = Deferral(clock)
    waited = 0.0
    while waited < 60:  # renewed all along
        held.busy()
        pause = held.pause()
        if pause == 0.0:
            break
        clock.now += pause
        waited += pause
    assert deferral.LONGEST <= waited < deferral.LONGEST + 2 * deferral.STEP
    clock.now += deferral.RUN / 2
    held.busy()
    assert held.pause() == 0.0  # still in its time to work
    clock.now += deferral.RUN / 2
    held.busy()
    assert held.pause() > 0  # and then it waits again


def _storing(stored: list[int]) -> Sink:
    """A sink that keeps the offsets it was handed."""

    async def sink(batch: list[tuple[Message, Tweet]]) -> None:
        stored.extend(message.offset for message, _ in batch)

    return sink


async def test_the_consumer_takes_no_batch_while_held_and_all_of_them_after() -> None:
    consumer, letters = ScriptedConsumer(_values(5)), Letters()
    stored: list[int] = []
    sink = _storing(stored)
    held = Deferral()
    held.busy()
    before = DEFERRED.labels("held")._value.get()
    stopping = asyncio.Event()
    task = asyncio.create_task(consume("held", consumer, sink, stopping, letters, deferral=held))
    for _ in range(5):
        await asyncio.sleep(deferral.LEASE / 10)
        held.busy()
        assert stored == [] and consumer.committed == []
    assert DEFERRED.labels("held")._value.get() > before
    held.free()
    for _ in range(200):
        if len(consumer.committed) == 5:
            break
        await asyncio.sleep(0.01)
    stopping.set()
    await task
    assert stored == [0, 1, 2, 3, 4] and consumer.committed == [0, 1, 2, 3, 4]


async def test_stopping_drains_even_while_held() -> None:
    consumer, letters = ScriptedConsumer(_values(3)), Letters()
    stored: list[int] = []
    sink = _storing(stored)
    held = Deferral()
    held.busy()
    stopping = asyncio.Event()
    stopping.set()
    await consume("held", consumer, sink, stopping, letters, deferral=held, drain_timeout=2)
    assert stored == [0, 1, 2]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def __call__(self, pid: int, signum: int) -> None:
        self.sent.append((pid, signum))


def _watch(share: float, used: dict[int, float]) -> tuple[IntakeWatch, Clock, Recorder]:
    clock, sent = Clock(), Recorder()
    watch = IntakeWatch(share, 2, clock=clock, cpu=used.get, send=sent)
    return watch, clock, sent


def test_the_watch_holds_the_sinks_from_the_share_and_frees_them_below_its_release() -> None:
    used = {10: 0.0, 11: 0.0}
    watch, clock, sent = _watch(0.5, used)
    watch.look([10, 11], [20, 21])  # the first look only takes the measure
    assert sent.sent == []

    def step(cores: float) -> bool:  # the intake used `cores` of the two over one second
        clock.now += 1.0
        used[10] += cores / 2
        used[11] += cores / 2
        sent.sent.clear()
        watch.look([10, 11], [20, 21])
        return watch.busy

    held = step(0.9)  # 45 % of the machine
    assert not held and sent.sent == []
    held = step(1.2)  # 60 %: hold them
    assert held and sent.sent == [(20, BUSY), (21, BUSY)]
    held = step(0.8)  # 40 %, above the release (0.75 × 50 %): renew
    assert held and sent.sent == [(20, BUSY), (21, BUSY)]
    held = step(0.7)  # 35 %: free them, once
    assert not held and sent.sent == [(20, FREE), (21, FREE)]
    held = step(0.7)
    assert sent.sent == []


def test_the_watch_ignores_processes_gone_or_new_and_sinks_that_exited() -> None:
    used = {10: 5.0}
    watch, clock, _ = _watch(0.5, used)
    sent: list[int] = []

    def send(pid: int, signum: int) -> None:
        if pid == 21:
            raise ProcessLookupError
        sent.append(pid)

    watch._send = send
    used[13] = 0.0
    watch.look([10, 13], [20, 21])
    clock.now += 1
    used[10] += 1.9
    used[12] = 50.0  # a process that appeared: its past is not this second's
    del used[13]  # and one that exited in between
    watch.look([10, 11, 12, 13], [20, 21])
    assert watch.busy and sent == [20]


def test_the_machine_is_its_cpus_or_its_cgroup_quota_where_lower(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    limits = tmp_path / "cpu.max"
    assert deferral.machine_cores(str(tmp_path / "none")) == cpus
    limits.write_text("max 100000\n")
    assert deferral.machine_cores(str(limits)) == cpus
    limits.write_text(f"{50_000 * cpus} 100000\n")  # half of them
    assert deferral.machine_cores(str(limits)) == cpus / 2
    limits.write_text("garbage\n")
    assert deferral.machine_cores(str(limits)) == cpus


def test_cpu_seconds_reads_what_a_process_used() -> None:
    burner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\n"
            "while time.process_time() < end: pass\nimport sys; sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while (cpu_seconds(burner.pid) or 0.0) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.25 <= (cpu_seconds(burner.pid) or 0.0) < 5
    finally:
        burner.communicate(b"")
    assert cpu_seconds(burner.pid) is None  # gone


async def test_the_signals_reach_a_sink_process_and_it_waits() -> None:
    held = Deferral()
    held.install(asyncio.get_running_loop())
    try:
        os.kill(os.getpid(), BUSY)
        await asyncio.sleep(0.05)
        assert held.pause() > 0
        os.kill(os.getpid(), FREE)
        await asyncio.sleep(0.05)
        assert held.pause() == 0.0
    finally:
        loop = asyncio.get_running_loop()
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.remove_signal_handler(signal.SIGUSR2)


async def test_a_sink_process_takes_the_signals_before_it_says_ready(tmp_path: Path) -> None:
    """The stack signals only sinks that answered /readyz; by then a signal must not kill."""
    settings = Settings.from_env({"WT_DATA_DIR": str(tmp_path), "WT_ACCESS_LOG": "0"})
    settings.archiver_port = free_port()
    settings.resolve()
    stopping = asyncio.Event()
    seen: list[object] = []

    def announce(line: str) -> None:
        if line.startswith("ready: "):
            seen.append(signal.getsignal(BUSY))
            seen.append(signal.getsignal(FREE))
            stopping.set()

    try:
        await asyncio.wait_for(
            run(settings, ["archiver"], announce=announce, stopping=stopping), 60
        )
    finally:
        deferral.ignore_signals()
    assert len(seen) == 2 and not {signal.SIG_DFL, None} & set(seen), seen
