"""Grafana dashboards as code: `make dashboards` (this script) writes the JSON files that the
Helm chart (ConfigMaps for the Grafana sidecar) and compose.yaml provision.

Three dashboards: "Weather Tweets" (Redis datasource plugin for the live counters, Prometheus
for rates, latency, lag and rejections), "Energy & CO2" (Kepler's joules per pod when Kepler
runs; the services' own CPU-time estimate, `weathertweets_energy_joules_total`, otherwise), and
"Country Messages (original)", the original system's board reading its own `HGETALL <pais>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "weathertweets" / "dashboards"

PROMETHEUS = {"type": "prometheus", "uid": "${prometheus}"}
REDIS = {"type": "redis-datasource", "uid": "${redis}"}

# Kepler 0.7.x reports lb of CO2 per kWh in its stock dashboard: coal, petroleum, natural gas.
CO2_LB_PER_KWH = {"coal": 2.23, "petroleum": 2.13, "natural gas": 0.91}
KWH_PER_JOULE = 2.7778e-7


def datasource_variable(name: str, plugin: str, label: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "datasource", "query": plugin, "hide": 0}


def constant(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "type": "constant", "query": value, "hide": 2}


def panel(kind: str, title: str, grid: tuple[int, int, int, int], targets: list[dict[str, Any]],
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    x, y, w, h = grid
    datasource = targets[0]["datasource"]
    return {
        "type": kind,
        "title": title,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "datasource": datasource,
        "targets": targets,
        **extra,
    }


def redis(command: str, key: str, ref: str = "A", **fields: Any) -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": REDIS,
        "type": "command",
        "command": command,
        "keyName": key,
        "query": "",
        **fields,
    }


def promql(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend}


def top_n(field: str, n: int) -> list[dict[str, Any]]:
    """Turn a hash (one row of fields) into rows sorted by count, keep n."""
    return [
        {"id": "reduce", "options": {"reducers": ["lastNotNull"], "mode": "seriesToRows"}},
        {"id": "organize", "options": {"renameByName": {"Field": field, "Last *": "tweets"}}},
        {"id": "sortBy", "options": {"sort": [{"field": "tweets", "desc": True}]}},
        {"id": "limit", "options": {"limitField": n}},
    ]


def dashboard(uid: str, title: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "uid": uid,
        "title": title,
        "tags": ["weathertweets"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def tweets_dashboard() -> dict[str, Any]:
    rate = "$__rate_interval"
    panels = [
        panel("stat", "Tweets counted", (0, 0, 6, 4), [redis("get", "${prefix}total")]),
        panel(
            "stat",
            "Tweets archived",
            (6, 0, 6, 4),
            [promql('sum(weathertweets_records_processed_total{group="archiver"})', "archived")],
        ),
        panel("stat", "Countries", (12, 0, 6, 4), [redis("hlen", "${prefix}countries")]),
        panel(
            "timeseries",
            "Tweets per second",
            (0, 4, 12, 8),
            [
                promql(f"sum(rate(weathertweets_tweets_accepted_total[{rate}]))", "accepted"),
                promql(
                    f"sum by (group) (rate(weathertweets_records_processed_total[{rate}]))",
                    "{{group}}",
                    "B",
                ),
            ],
        ),
        panel(
            "piechart",
            "Share per country",
            (12, 4, 12, 8),
            [redis("hgetall", "${prefix}countries")],
            transformations=top_n("pais", 12),
            options={
                "reduceOptions": {"values": True, "calcs": ["lastNotNull"]},
                "pieType": "donut",
                "legend": {"placement": "right"},
            },
        ),
        panel(
            "barchart",
            "Top countries",
            (0, 12, 12, 9),
            [redis("hgetall", "${prefix}countries")],
            transformations=top_n("pais", 15),
            options={"orientation": "horizontal", "xField": "pais"},
        ),
        panel(
            "table",
            "Tweets per country",
            (12, 12, 12, 9),
            [redis("hgetall", "${prefix}countries")],
            transformations=top_n("pais", 250),
        ),
        panel(
            "barchart",
            "Top texts in $pais",
            (0, 21, 12, 9),
            [redis("hgetall", "${prefix}country:$pais")],
            transformations=top_n("texto", 10),
            options={"orientation": "horizontal", "xField": "texto"},
        ),
        panel(
            "table",
            "Recent tweets",
            (12, 21, 12, 9),
            [redis("xrevrange", "${prefix}recent", start="+", end="-", count=25)],
        ),
        panel(
            "timeseries",
            "End-to-end latency (received → archived / counted)",
            (0, 30, 12, 8),
            [
                promql(
                    "histogram_quantile(0.99, sum by (le, group) "
                    f"(rate(weathertweets_end_to_end_seconds_bucket[{rate}])))",
                    "p99 {{group}}",
                ),
                promql(
                    "histogram_quantile(0.5, sum by (le, group) "
                    f"(rate(weathertweets_end_to_end_seconds_bucket[{rate}])))",
                    "p50 {{group}}",
                    "B",
                ),
            ],
            fieldConfig={"defaults": {"unit": "s"}},
        ),
        panel(
            "piechart",
            "Weather conditions",
            (0, 38, 12, 8),
            [redis("hgetall", "${prefix}conditions")],
            transformations=top_n("condition", 9),
        ),
        panel(
            "barchart",
            "Weather in $pais",
            (12, 38, 12, 8),
            [redis("hgetall", "${prefix}conditions:$pais")],
            transformations=top_n("condition", 9),
            options={"orientation": "horizontal", "xField": "condition"},
        ),
        panel(
            "timeseries",
            "Consumer lag (records)",
            (12, 30, 6, 8),
            [promql("sum by (group) (weathertweets_consumer_lag)", "{{group}}")],
        ),
        panel(
            "timeseries",
            "Rejected requests by reason",
            (18, 30, 6, 8),
            [
                promql(
                    f"sum by (reason) (rate(weathertweets_tweets_rejected_total[{rate}]))",
                    "{{reason}}",
                )
            ],
        ),
    ]
    variables = [
        datasource_variable("prometheus", "prometheus", "Prometheus"),
        datasource_variable("redis", "redis-datasource", "Redis"),
        constant("prefix", "wt:"),
        {
            "name": "pais",
            "label": "País",
            "type": "query",
            "datasource": REDIS,
            "query": "HKEYS ${prefix}countries",
            "refresh": 2,
            "sort": 1,
            "current": {"text": "Guatemala", "value": "Guatemala"},
        },
    ]
    return dashboard("weathertweets", "Weather Tweets", panels, variables)


def joules_rate(selector: str = "") -> str:
    """Joules per second (W) per pod: Kepler's when it runs, else the services' own estimate."""
    kepler = (
        f"sum by (pod_name) (rate(kepler_container_joules_total"
        f'{{container_namespace=~"$namespace"{selector}}}[$__rate_interval]))'
    )
    estimate = (
        "sum by (pod_name) (label_replace(rate(weathertweets_energy_joules_total"
        '[$__rate_interval]), "pod_name", "$1", "service", "(.+)"))'
    )
    return f"({kepler}) or ({estimate})"


def energy_dashboard() -> dict[str, Any]:
    watts = joules_rate()
    joules_day = (
        'sum(increase(kepler_container_joules_total{container_namespace=~"$namespace"}'
        "[24h])) or sum(increase(weathertweets_energy_joules_total[24h]))"
    )
    kwh_day = f"({joules_day}) * {KWH_PER_JOULE}"
    tweets_rate = (
        'sum(rate(weathertweets_records_processed_total{group="archiver"}[$__rate_interval]))'
    )
    panels = [
        panel(
            "timeseries",
            "Power per pod (W)",
            (0, 0, 12, 8),
            [promql(watts, "{{pod_name}}")],
            fieldConfig={"defaults": {"unit": "watt"}},
        ),
        panel(
            "stat",
            "Energy, last 24 h (kWh)",
            (12, 0, 6, 4),
            [promql(kwh_day, "kWh")],
            fieldConfig={"defaults": {"unit": "kwatth", "decimals": 6}},
        ),
        panel(
            "stat",
            "Joules per 1 000 tweets",
            (18, 0, 6, 4),
            [promql(f"sum({watts}) / {tweets_rate} * 1000", "J / 1000 tweets")],
            fieldConfig={"defaults": {"unit": "joule"}},
        ),
    ]
    for index, (source, factor) in enumerate(CO2_LB_PER_KWH.items()):
        panels.append(
            panel(
                "stat",
                f"CO2, last 24 h, if from {source} (lb)",
                (12 + 4 * index, 4, 4, 4),
                [promql(f"({kwh_day}) * {factor}", source)],
                fieldConfig={"defaults": {"unit": "mass", "decimals": 6}},
            )
        )
    panels.append(
        panel(
            "timeseries",
            "Cumulative energy per pod (J)",
            (0, 8, 24, 8),
            [
                promql(
                    "(sum by (pod_name) (kepler_container_joules_total"
                    '{container_namespace=~"$namespace"}))'
                    " or (sum by (pod_name) (label_replace(weathertweets_energy_joules_total,"
                    ' "pod_name", "$1", "service", "(.+)")))',
                    "{{pod_name}}",
                )
            ],
            fieldConfig={"defaults": {"unit": "joule"}},
        )
    )
    variables = [
        datasource_variable("prometheus", "prometheus", "Prometheus"),
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "custom",
            "query": "project",
            "current": {"text": "project", "value": "project"},
        },
    ]
    return dashboard("weathertweets-energy", "Energy & CO2", panels, variables)


def original_dashboard() -> dict[str, Any]:
    """The original system's "Country Messages" board, rebuilt: every panel reads only the
    original's own Redis hashes (`HGETALL <pais>`, kept by the counter while WT_SEED_KEYS=1),
    one row of panels per country picked in `$pais`."""

    def total_of_hash(title: str) -> dict[str, Any]:
        options = {"mode": "reduceRow", "reduce": {"reducer": "sum"}, "alias": title}
        return {"id": "calculateField", "options": {**options, "replaceFields": True}}

    per_country = [
        panel(
            "stat",
            "Messages — $pais",
            (0, 0, 6, 8),
            [redis("hgetall", "$pais")],
            transformations=[total_of_hash("Messages")],
            repeat="pais",
            repeatDirection="v",
        ),
        panel(
            "piechart",
            "Messages Pie Chart — $pais",
            (6, 0, 9, 8),
            [redis("hgetall", "$pais")],
            transformations=top_n("texto", 12),
            options={
                "reduceOptions": {"values": True, "calcs": ["lastNotNull"]},
                "pieType": "pie",
                "legend": {"placement": "right"},
            },
            repeat="pais",
            repeatDirection="v",
        ),
        panel(
            "table",
            "Messages per text — $pais",
            (15, 0, 9, 8),
            [redis("hgetall", "$pais")],
            transformations=top_n("texto", 50),
            repeat="pais",
            repeatDirection="v",
        ),
    ]
    variables = [
        datasource_variable("redis", "redis-datasource", "Redis"),
        {
            "name": "pais",
            "label": "País",
            "type": "custom",
            "multi": True,
            "includeAll": False,
            "query": ",".join(ORIGINAL_COUNTRIES),
            "current": {"text": ["Guatemala", "Argentina"], "value": ["Guatemala", "Argentina"]},
        },
    ]
    title = "Country Messages (original)"
    board = dashboard("weathertweets-original", title, per_country, variables)
    board["tags"] = ["weathertweets", "original"]
    return board


# The countries the original's dashboard offers; its hashes are keyed by these exact names.
ORIGINAL_COUNTRIES = (
    "Guatemala", "Argentina", "México", "El Salvador", "Honduras", "Nicaragua", "Costa Rica",
    "Panamá", "Colombia", "Venezuela", "Ecuador", "Perú", "Bolivia", "Chile", "Paraguay",
    "Uruguay", "Brasil", "Cuba", "República Dominicana", "Puerto Rico", "España",
    "Estados Unidos", "Canadá", "Turquía",
)  # fmt: skip


def render() -> dict[str, str]:
    boards = {
        "weathertweets.json": tweets_dashboard(),
        "energy.json": energy_dashboard(),
        "original.json": original_dashboard(),
    }
    return {name: json.dumps(b, indent=2, ensure_ascii=False) + "\n" for name, b in boards.items()}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")
