"""Values the chart must refuse before anything reaches a cluster, and names that must never clash.

Each invalid value below was accepted by the chart once, and then refused by the API server or
rendered something that could never work. The chart refuses them now: by its values schema (so
`helm lint` too), or by a check in templates/checks.yaml where the schema cannot compare two
values. Where the API server is running, each schema case is also sent to it with the schema
skipped, to show that the schema refuses exactly what the server would (or what never works).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.kube import require_cluster
from tests.test_deploy import CHART, helm, render


@dataclass(frozen=True)
class Invalid:
    setting: str
    refused_by: str  # "schema" (helm lint and every install) or "template" (templates/checks.yaml)
    chart_says: str
    server_says: str | None  # what the API server answers to the rendered manifests; None: accepted


INVALID = [
    Invalid("ingress.host=Tweets.Example.com", "schema", "/ingress/host",
            'spec.rules[0].host: Invalid value: "Tweets.Example.com"'),
    Invalid("ingress.host=192.0.2.1", "schema", "/ingress/host",
            "must be a DNS name, not an IP address"),
    Invalid("gateway.resources.limits.cpu=1core", "schema", "/gateway/resources/limits/cpu",
            "quantities must match the regular expression"),
    Invalid("gateway.resources.requests.memory=128MB", "schema",
            "/gateway/resources/requests/memory", "quantities must match the regular expression"),
    Invalid("gateway.resources.requests.cpu=2", "template",
            "gateway.resources: requests.cpu (2) is above limits.cpu (1)", None),
    Invalid("redis.resources.requests.memory=1Gi", "template",
            "redis.resources: requests.memory (1Gi) is above limits.memory (256Mi)", None),
    Invalid("pipeline.topic=My_Topic", "schema", "/pipeline/topic",
            'metadata.name: Invalid value: "wt-weathertweets-My_Topic"'),
    Invalid("ingress.className=Nginx_X", "schema", "/ingress/className",
            'spec.ingressClassName: Invalid value: "Nginx_X"'),
    Invalid("dashboards.labelName=grafana dashboard", "schema", "/dashboards/labelName",
            'metadata.labels: Invalid value: "grafana dashboard"'),
    Invalid("dashboards.labelValue=a b", "schema", "/dashboards/labelValue",
            'metadata.labels: Invalid value: "a b"'),
    Invalid("ingress.tls[0].secretName=TLS_cert", "schema", "/ingress/tls/0/secretName",
            "a lowercase RFC 1123 subdomain"),
    # Accepted by the server, and never works: a namespace name is lower case, so the
    # NetworkPolicy matches no namespace and the ingress controller can never reach the gateway.
    Invalid("networkPolicy.ingressControllerNamespace=Ingress_NGINX", "schema",
            "/networkPolicy/ingressControllerNamespace", None),
    # Accepted by the server, and never works: no pod may ever be evicted, so drains block.
    Invalid("podDisruptionBudget.maxUnavailable=0", "schema", "/podDisruptionBudget/maxUnavailable",
            None),
    Invalid("podDisruptionBudget.maxUnavailable=0%", "schema",
            "/podDisruptionBudget/maxUnavailable", None),
    Invalid("gateway.autoscaling.minReplicas=7", "template",
            "gateway.autoscaling: minReplicas (7) is above maxReplicas (6)", None),
    # Accepted by the server, and never works: Redis at its limit is killed before it refuses.
    Invalid("redis.maxmemory=256Mi", "template",
            "redis.maxmemory (256Mi) must be below redis.resources.limits.memory (256Mi)", None),
    # Accepted by the server, and never works: the password goes into URLs as it is.
    Invalid("redis.auth.gatewayPassword=pass@word:0123456789", "schema",
            "/redis/auth/gatewayPassword", None),
    # Accepted by the server, and weak: a short seed makes every credential guessable.
    Invalid("secretSeed=short", "schema", "/secretSeed", None),
    Invalid("auth.apiKeys={short}", "schema", "/auth/apiKeys/0", None),
    # Accepted by the server, and never works: the prefix is a Redis ACL key pattern.
    Invalid("pipeline.counterPrefix=wt*", "schema", "/pipeline/counterPrefix", None),
    Invalid("auth.allowAnonymous=true,auth.existingSecret=keys", "template",
            "auth.allowAnonymous opens writes to anyone", None),
    Invalid("redis.auth.existingSecret=mine", "template",
            "set dashboards.redisDatasource=false", None),
]  # fmt: skip
IDS = [case.setting for case in INVALID]


@pytest.mark.parametrize("case", INVALID, ids=IDS)
def test_the_chart_refuses_the_value(case: Invalid) -> None:
    done = helm("template", "wt", str(CHART), "--set", case.setting)
    assert done.returncode != 0, f"{case.setting} was accepted"
    assert case.chart_says in done.stderr, done.stderr
    linted = helm("lint", str(CHART), "--strict", "--set", case.setting)
    if case.refused_by == "schema":  # lint reports a template's fail() only as [INFO]
        assert linted.returncode != 0 and case.chart_says in linted.stdout, linted.stdout


@pytest.mark.parametrize(
    "case", [c for c in INVALID if c.refused_by == "schema"], ids=lambda c: c.setting
)
def test_the_server_agrees_with_the_schema(case: Invalid) -> None:
    cluster = require_cluster()
    namespace = cluster.namespace()
    rendered = helm(
        "template", "wt", str(CHART), "--namespace", namespace, "--skip-schema-validation",
        "--set", case.setting,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    done = cluster.dry_run(namespace, rendered.stdout)
    if case.server_says is None:
        assert done.returncode == 0, done.stderr  # the server cannot know: the chart must
    else:
        assert done.returncode != 0 and case.server_says in done.stderr, done.stderr


def names(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(doc["kind"], doc["metadata"]["name"]) for doc in docs}


def test_two_releases_share_no_name() -> None:
    everything = ["-f", str(CHART / "ci" / "all-on-values.yaml")]
    first = names(render(*everything))
    done = helm("template", "wt2", str(CHART), "--namespace", "project", *everything)
    assert done.returncode == 0, done.stderr
    second = names([doc for doc in yaml.safe_load_all(done.stdout) if doc])
    assert not first & second
    kinds = Counter(kind for kind, _ in first)
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Job"} <= set(kinds)
    # Strimzi's User Operator writes a Secret named after each KafkaUser: none may be ours.
    users = {name for kind, name in first | second if kind == "KafkaUser"}
    assert not users & {name for kind, name in first | second if kind == "Secret"}


def test_the_longest_release_name_fits_every_name_limit() -> None:
    release = "r" * 53  # Helm's longest release name
    done = helm(
        "template", release, str(CHART), "--namespace", "project",
        "-f", str(CHART / "ci" / "all-on-values.yaml"), "--set", "kafka.strimzi.clusterName=kafka",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    limits = {"Service": 63, "Job": 63, "StatefulSet": 52, "Deployment": 63}
    for doc in yaml.safe_load_all(done.stdout):
        if doc and doc["kind"] in limits:
            name = doc["metadata"]["name"]
            assert len(name) <= limits[doc["kind"]], (doc["kind"], name)
    too_long = helm("template", release, str(CHART), "--namespace", "project")
    assert "set a shorter kafka.strimzi.clusterName" in too_long.stderr


def test_locust_jobs_are_new_for_each_run_and_kept_otherwise() -> None:
    def jobs(*values: str) -> dict[str, str]:
        docs = render("--set", "locust.enabled=true", "--set", "locust.workers=2", *values)
        return {
            d["metadata"]["labels"]["app.kubernetes.io/component"]: d["metadata"]["name"]
            for d in docs
            if d["kind"] == "Job"
        }

    first = jobs()
    assert first["locust"].removeprefix("wt-weathertweets-locust-") == (
        first["locust-worker"].removeprefix("wt-weathertweets-locust-worker-")
    )  # one run: the master and its workers change together
    assert jobs("--set", "gateway.replicas=3") == first
    for change in ("image.tag=0.0.0-test", "locust.users=20"):
        changed = jobs("--set", change)
        assert not set(changed.values()) & set(first.values()), change
