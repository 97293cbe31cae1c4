"""The chart against a real Kubernetes API server (v1.33.5, with etcd), as `make k8s-up` starts it.

What only a server checks: every object's validation and defaulting, strict field validation,
admission (PodSecurity "restricted" included), the CRDs' schemas, name clashes between releases,
immutable fields on upgrade, and Helm's `lookup()`. No kubelet and no controllers run: nothing is
scheduled, no Job runs, no Strimzi operator acts (its kinds are checked through our CRD subset).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import Cluster, require_cluster, warnings
from tests.test_deploy import ALL_ON, CHART, PROFILES

VALUES = PROFILES  # default, all-on, production
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
NEW_TAG = f"{APP_VERSION}-next"
# Every kind the chart makes and `helm uninstall` must take away again.
KINDS = (
    "deploy,statefulset,job,service,configmap,secret,ingress,networkpolicy,pdb,hpa,"
    "kafka,kafkanodepool,kafkatopic,kafkauser,servicemonitor"
)


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return require_cluster()


def template(cluster: Cluster, namespace: str, *values: str, release: str = "wt") -> str:
    done = cluster.helm(
        "template", release, str(CHART), "--namespace", namespace, "--kube-version", "1.33.5",
        *values,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def succeeds(done: Any) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    assert not warnings(done.stdout + done.stderr), warnings(done.stdout + done.stderr)


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_the_server_accepts_every_object_without_a_warning(
    cluster: Cluster, values: list[str]
) -> None:
    namespace = cluster.namespace()
    manifests = template(cluster, namespace, *values)
    done = cluster.dry_run(namespace, manifests)
    succeeds(done)
    objects = [doc for doc in yaml.safe_load_all(manifests) if doc]
    assert done.stdout.count("serverside-applied (server dry run)") == len(objects), done.stdout


def test_the_namespace_shows_pod_security_warnings(cluster: Cluster, tmp_path: Path) -> None:
    """The control for the test above: a pod template that breaks "restricted" is warned about,
    by kubectl and by Helm."""
    namespace = cluster.namespace()
    gateway = next(
        doc
        for doc in yaml.safe_load_all(template(cluster, namespace))
        if doc and doc["kind"] == "Deployment"
    )
    gateway["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {}
    done = cluster.dry_run(namespace, json.dumps(gateway))
    assert done.returncode == 0, done.stderr
    assert any("violate PodSecurity" in line for line in warnings(done.stderr)), done.stderr

    chart = tmp_path / "unsafe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: unsafe\nversion: 0.1.0\n")
    (chart / "templates" / "gateway.json").write_text(json.dumps(gateway))
    installed = cluster.helm("install", "unsafe", str(chart), "-n", namespace)
    assert installed.returncode == 0, installed.stderr
    assert any("violate PodSecurity" in line for line in warnings(installed.stderr)), installed


def test_the_server_refuses_a_request_above_its_limit(cluster: Cluster) -> None:
    """Why the chart fails such values itself (the schema cannot compare quantities)."""
    namespace = cluster.namespace()
    gateway = next(
        doc
        for doc in yaml.safe_load_all(template(cluster, namespace))
        if doc and doc["kind"] == "Deployment"
    )
    gateway["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "2"
    done = cluster.dry_run(namespace, json.dumps(gateway))
    assert done.returncode != 0
    assert "must be less than or equal to cpu limit" in done.stderr


def release_objects(cluster: Cluster, namespace: str, release: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={release}"
    items: list[dict[str, Any]] = cluster.get(KINDS, "-n", namespace, "-l", selector)["items"]
    return items


def jobs(cluster: Cluster, namespace: str, release: str) -> dict[str, str]:
    """{job name: image} of a release."""
    return {
        job["metadata"]["name"]: job["spec"]["template"]["spec"]["containers"][0]["image"]
        for job in release_objects(cluster, namespace, release)
        if job["kind"] == "Job"
    }


def credentials(cluster: Cluster, namespace: str, release: str) -> dict[str, dict[str, str]]:
    """{Secret: data} of a release's Secrets."""
    return {
        item["metadata"]["name"]: item["data"]
        for item in release_objects(cluster, namespace, release)
        if item["kind"] == "Secret"
    }


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.namespace()
    yield name
    for release in ("wt", "wt2"):  # what a failed test left behind
        cluster.helm("uninstall", release, "-n", name)


def test_install_upgrade_a_second_release_and_uninstall(cluster: Cluster, namespace: str) -> None:
    values = ["-n", namespace, "-f", str(ALL_ON)]
    succeeds(cluster.helm("install", "wt", str(CHART), *values))
    first_jobs = jobs(cluster, namespace, "wt")
    assert len(first_jobs) == 2 and all(i.endswith(f":{APP_VERSION}") for i in first_jobs.values())
    secrets = credentials(cluster, namespace, "wt")
    assert len(secrets) == 9  # 4 services, keys, token, MongoDB, Redis, Grafana's datasource

    succeeds(cluster.helm("upgrade", "wt", str(CHART), *values, "--set", f"image.tag={NEW_TAG}"))
    status = json.loads(cluster.helm("status", "wt", "-n", namespace, "-o", "json").stdout)
    assert (status["info"]["status"], status["version"]) == ("deployed", 2)
    upgraded = jobs(cluster, namespace, "wt")
    assert len(upgraded) == 2 and all(i.endswith(f":{NEW_TAG}") for i in upgraded.values())
    assert not set(upgraded) & set(first_jobs)  # new Jobs, the old ones removed
    # lookup(): every generated password, key and token survives the upgrade
    assert credentials(cluster, namespace, "wt") == secrets

    succeeds(cluster.helm("install", "wt2", str(CHART), *values))
    listed = json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout)
    assert {(r["name"], r["status"]) for r in listed} == {("wt", "deployed"), ("wt2", "deployed")}

    for release in ("wt", "wt2"):
        succeeds(cluster.helm("uninstall", release, "-n", namespace))
        assert release_objects(cluster, namespace, release) == []


def test_storage_changes_need_the_documented_migration(cluster: Cluster, namespace: str) -> None:
    """A StatefulSet's volumeClaimTemplates are immutable: the chart stops such an upgrade before
    it touches anything, and the path in docs/deploy-kubernetes.md (delete the StatefulSet,
    keeping its pods and volumes, then upgrade) works."""
    succeeds(cluster.helm("install", "wt", str(CHART), "-n", namespace))
    bigger = ["-n", namespace, "--set", "mongodb.storage.size=20Gi"]
    refused = cluster.helm("upgrade", "wt", str(CHART), *bigger)
    assert refused.returncode != 0
    assert "mongodb.storage" in refused.stderr and "deploy-kubernetes.md" in refused.stderr
    status = json.loads(cluster.helm("status", "wt", "-n", namespace, "-o", "json").stdout)
    assert (status["info"]["status"], status["version"]) == ("deployed", 1)

    sts = ["statefulset", "wt-weathertweets-mongodb", "-n", namespace]
    orphan = cluster.kubectl("delete", *sts, "--cascade=orphan", "--wait=false")
    assert orphan.returncode == 0, orphan.stderr
    # The garbage collector (a controller, not running here) would now release the pods and
    # volume claims, then drop its "orphan" finalizer; there are none: only that last step is left.
    released = cluster.kubectl(
        "patch", *sts, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    assert released.returncode == 0, released.stderr
    succeeds(cluster.helm("upgrade", "wt", str(CHART), *bigger))
    recreated = cluster.get(*sts)
    claim = recreated["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert claim == "20Gi"


def test_the_production_profile_installs_upgrades_and_uninstalls(
    cluster: Cluster, namespace: str
) -> None:
    values = ["-n", namespace, *VALUES["production"]]
    succeeds(cluster.helm("install", "wt", str(CHART), *values))
    users = {
        item["metadata"]["name"]
        for item in release_objects(cluster, namespace, "wt")
        if item["kind"] == "KafkaUser"
    }
    assert users == {f"wt-weathertweets-{s}" for s in ("ingest", "archiver", "counter")}
    pool = cluster.get("kafkanodepool", "wt", "-n", namespace)
    assert pool["spec"]["replicas"] == 3
    secrets = credentials(cluster, namespace, "wt")
    succeeds(cluster.helm("upgrade", "wt", str(CHART), *values, "--set", f"image.tag={NEW_TAG}"))
    assert credentials(cluster, namespace, "wt") == secrets
    succeeds(cluster.helm("uninstall", "wt", "-n", namespace))
    assert release_objects(cluster, namespace, "wt") == []


def test_a_seeded_release_holds_what_its_render_says(cluster: Cluster, namespace: str) -> None:
    """GitOps: with secretSeed, the credentials a `helm template` renders (no cluster to look
    anything up) are those an installed release holds, and an upgrade keeps them."""
    seed = ["--set", "secretSeed=" + "gitops-seed-0123456789abcdefghijklmnop"]
    rendered = {
        doc["metadata"]["name"]: doc["stringData"]
        for doc in yaml.safe_load_all(template(cluster, namespace, *seed))
        if doc and doc["kind"] == "Secret"
    }
    succeeds(cluster.helm("install", "wt", str(CHART), "-n", namespace, *seed))
    held = credentials(cluster, namespace, "wt")
    decoded = {
        name: {key: base64.b64decode(value).decode() for key, value in data.items()}
        for name, data in held.items()
    }
    assert decoded == rendered
    succeeds(cluster.helm("upgrade", "wt", str(CHART), "-n", namespace, *seed))
    assert credentials(cluster, namespace, "wt") == held
