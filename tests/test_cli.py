"""The command line: settings, help, and the test data it generates."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from weathertweets.cli import build_parser, main
from weathertweets.config import ENVIRONMENT, SettingError, Settings
from weathertweets.gendata import COUNTRIES, TEXTS, generate


def test_every_setting_has_a_documented_variable() -> None:
    assert {f"WT_{f.name.upper()}" for f in fields(Settings)} == set(ENVIRONMENT)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in ENVIRONMENT)


def test_help_lists_the_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ENVIRONMENT)


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from weathertweets.cli import _settings

    monkeypatch.setenv("WT_PORT", "9999")
    monkeypatch.setenv("WT_DATA_DIR", "/nowhere")
    args = build_parser().parse_args(["up", "--port", "8181", "--data-dir", str(tmp_path)])
    settings = _settings(args)
    assert settings.port == 8181
    assert settings.broker_url == f"sqlite:///{tmp_path.resolve()}/broker.db"
    assert settings.ingest_target == "127.0.0.1:50051"


def test_unknown_backend_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WT_BROKER_URL", "rabbit://localhost")
    assert main(["serve", "ingest", "--ingest-port", "0"]) == 2
    assert "unknown scheme 'rabbit'" in capsys.readouterr().err


def test_gen_data_is_realistic_and_repeatable(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    assert main(["gen-data", "-n", "10000", "-o", str(out), "--seed", "4"]) == 0
    records = json.loads(out.read_text(encoding="utf-8"))
    assert len(records) == 10_000
    assert records == generate(10_000, seed=4)
    per_country = Counter(r["pais"] for r in records)
    assert len(per_country) >= 80
    counts = sorted(per_country.values(), reverse=True)
    assert counts[0] > 10 * counts[len(counts) // 2]  # skewed, not uniform
    known_texts = {t for texts in TEXTS.values() for t in texts}
    assert all(any(r["texto"].startswith(t) for t in known_texts) for r in records[:200])
    assert {"Turquía", "Perú", "México", "España"} <= {name for name, _ in COUNTRIES}


def test_settings_travel_to_child_processes_as_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, port=9191, counter_prefix="x:", seed_keys=False)
    settings.resolve()
    for name, value in settings.environment().items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env().resolve() == settings


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("WT_PORT", "abc", "WT_PORT='abc': expected an integer"),
        ("WT_PORT", "70000", "WT_PORT=70000: not a TCP port"),
        ("WT_SEED_KEYS", "maybe", "WT_SEED_KEYS='maybe'"),
        ("WT_ENERGY_MAX_WATTS", "lots", "WT_ENERGY_MAX_WATTS='lots': expected a number"),
        ("WT_LOG_FORMAT", "xml", "WT_LOG_FORMAT='xml'"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["up"]) == 2
    error = capsys.readouterr().err
    assert named in error and error.count("\n") == 1  # one line, no traceback


def test_a_bad_flag_value_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--port", "http"]) == 2
    assert "--port='http': expected an integer" in capsys.readouterr().err


def test_every_flag_comes_from_a_declared_setting() -> None:
    subcommands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    flags = {
        option
        for action in subcommands.choices["up"]._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    declared = {"--" + f.name.replace("_", "-") for f in fields(Settings)}
    assert flags and flags <= declared


def test_stack_replicas_are_parsed_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from weathertweets.stack import Stack, parse_replicas

    assert parse_replicas("ingest=2, counter=3") == {
        "ingest": 2,
        "archiver": 1,
        "counter": 3,
        "gateway": 1,
    }
    for bad in ("ingest", "queue=2", "ingest=x", "ingest=0", "ingest=10"):
        assert main(["stack", "--data-dir", str(tmp_path), "--replicas", bad]) == 2
        assert "--replicas" in capsys.readouterr().err
    # Two consumers in one group share partitions on Kafka: the embedded broker has no balancing.
    assert main(["stack", "--data-dir", str(tmp_path), "--replicas", "counter=2"]) == 2
    assert "needs Kafka" in capsys.readouterr().err
    settings = Settings(broker_url="kafka://k:9092").resolve()
    stack = Stack(settings, tmp_path, parse_replicas("gateway=2,ingest=2,counter=2"))
    ingests = "ipv4:127.0.0.1:50051,127.0.0.1:50151"
    assert {n: (c.port, c.settings.ingest_target) for n, c in stack.children.items()} == {
        "ingest-1": (8002, ingests),
        "ingest-2": (8102, ingests),
        "archiver": (8001, ingests),
        "counter-1": (8000, ingests),
        "counter-2": (8100, ingests),
        "gateway-1": (8080, ingests),
        "gateway-2": (8180, ingests),
    }
    assert stack.children["ingest-2"].settings.ingest_port == 50151


def test_stack_runs_a_gateway_s_workers_as_its_own_children(tmp_path: Path) -> None:
    from weathertweets.config import SettingError
    from weathertweets.stack import Stack, parse_replicas

    settings = Settings(broker_url="kafka://k:9092", workers=2).resolve()
    stack = Stack(settings, tmp_path, parse_replicas("gateway=2"))
    gateways = {n: c for n, c in stack.children.items() if c.service == "gateway"}
    assert {n: c.port for n, c in gateways.items()} == {
        "gateway-1-w1": 8080,
        "gateway-1-w2": 8080,
        "gateway-2-w1": 8180,
        "gateway-2-w2": 8180,
    }
    assert all(c.settings.workers == 1 and c.settings.reuse_port for c in gateways.values())
    assert {c.settings.workers for n, c in stack.children.items() if n not in gateways} == {2}
    clash = Settings(broker_url="kafka://k:9092", workers=2, port=8100).resolve()
    with pytest.raises(SettingError, match="gateway-w1 and counter-2"):  # workers share no other's
        Stack(clash, tmp_path, parse_replicas("counter=2"))


def test_stack_lowers_the_sinks_only_on_kafka(tmp_path: Path) -> None:
    from weathertweets.stack import Stack

    own = os.getpriority(os.PRIO_PROCESS, 0)
    on_kafka = Stack(Settings(broker_url="kafka://k:9092").resolve(), tmp_path)
    assert (on_kafka._sink_nice(), on_kafka._sink_idle()) == (max(0, 10 - own), True)
    embedded = Stack(Settings(data_dir=tmp_path).resolve(), tmp_path)
    # the sinks' commits share the log's write lock
    assert (embedded._sink_nice(), embedded._sink_idle()) == (0, False)
    off = Stack(
        Settings(broker_url="kafka://k:9092", sink_nice=0, sink_idle=False).resolve(), tmp_path
    )
    assert (off._sink_nice(), off._sink_idle()) == (0, False)


def test_stack_holds_the_sinks_under_load_only_on_kafka(tmp_path: Path) -> None:
    from weathertweets.services.deferral import machine_cores
    from weathertweets.stack import Stack

    watch = Stack(Settings(broker_url="kafka://k:9092").resolve(), tmp_path)._intake_watch()
    assert watch is not None and (watch.share, watch.cores) == (0.5, machine_cores())
    embedded = Stack(Settings(data_dir=tmp_path).resolve(), tmp_path)
    assert embedded._intake_watch() is None
    off = Stack(Settings(broker_url="kafka://k:9092", sink_defer=0).resolve(), tmp_path)
    assert off._intake_watch() is None
    with pytest.raises(SettingError, match="WT_SINK_DEFER"):
        Settings(broker_url="kafka://k:9092", sink_defer=1.5).resolve()


def test_stack_signals_only_sinks_that_are_ready_and_running(tmp_path: Path) -> None:
    from weathertweets.stack import CONSUMERS, INTAKE, Stack

    stack = Stack(Settings(broker_url="kafka://k:9092").resolve(), tmp_path)
    done = subprocess.Popen(["true"])
    done.wait()
    running = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        states = {
            "archiver": (running[0], True),
            "counter": (running[1], False),  # still starting: no handler yet
            "gateway": (running[2], True),
            "ingest": (done, True),  # exited: its pid may be someone else's by now
        }
        for name, (process, ready) in states.items():
            stack.children[name].process, stack.children[name].ready = process, ready
        assert stack._pids(CONSUMERS) == [running[0].pid]
        assert stack._pids(INTAKE) == [running[2].pid]
    finally:
        for process in running:
            process.kill()
            process.wait()


def test_stack_replicas_refuse_ports_that_collide(tmp_path: Path) -> None:
    from weathertweets.config import SettingError
    from weathertweets.stack import Stack, parse_replicas

    settings = Settings(broker_url="kafka://k:9092", port=8100).resolve()  # counter-2's port
    with pytest.raises(SettingError, match="gateway and counter-2"):
        Stack(settings, tmp_path, parse_replicas("counter=2"))
    settings = Settings(broker_url="kafka://k:9092", port=65500).resolve()
    with pytest.raises(SettingError, match="WT_PORT"):
        Stack(settings, tmp_path, parse_replicas("gateway=2"))
