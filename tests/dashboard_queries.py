"""Every query of the Grafana dashboards, ready to run against a real Redis and Prometheus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

DASHBOARDS = ROOT / "deploy" / "helm" / "weathertweets" / "dashboards"


@dataclass(frozen=True)
class RedisQuery:
    where: str
    args: tuple[str, ...]  # a command line, variables still in it


@dataclass(frozen=True)
class PromQuery:
    where: str
    expr: str


def _redis_args(target: dict[str, object]) -> tuple[str, ...]:
    command, key = str(target["command"]).upper(), str(target["keyName"])
    if command == "XREVRANGE":
        return (
            command,
            key,
            str(target["start"]),
            str(target["end"]),
            "COUNT",
            str(target["count"]),
        )
    return (command, key)


def queries(path: Path) -> Iterator[RedisQuery | PromQuery]:
    board = json.loads(path.read_text())
    for variable in board["templating"]["list"]:
        if variable["type"] == "query" and variable["datasource"]["type"] == "redis-datasource":
            yield RedisQuery(f"{path.name} ${variable['name']}", tuple(variable["query"].split()))
    for panel in board["panels"]:
        for target in panel["targets"]:
            where = f"{path.name} {panel['title']!r} {target['refId']}"
            if target["datasource"]["type"] == "redis-datasource":
                yield RedisQuery(where, _redis_args(target))
            else:
                yield PromQuery(where, target["expr"])


def all_queries() -> list[RedisQuery | PromQuery]:
    return [q for path in sorted(DASHBOARDS.glob("*.json")) for q in queries(path)]
