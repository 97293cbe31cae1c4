"""Static checks of everything that deploys: image, compose file, Helm chart, dashboards.

No Docker engine runs here, so the chart is linted and rendered by Helm, the manifests validated
against the Kubernetes 1.33 schemas (strict) and the Strimzi CRDs, and the rendered output held
to the project's policies. Against a real API server: tests/test_k8s_apiserver.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT
from weathertweets.gendata import generate

CHART = ROOT / "deploy" / "helm" / "weathertweets"
HELM = ROOT / ".cache" / "engines" / "bin" / "helm"
KUBE_VERSION = "1.33.0"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
PRODUCTION = CHART / "ci" / "production-values.yaml"
PEAK = CHART / "ci" / "peak-values.yaml"
PROFILES = {
    "default": [],
    "all-on": ["-f", str(ALL_ON)],
    "production": ["-f", str(PRODUCTION)],
    "peak": ["-f", str(PRODUCTION), "-f", str(PEAK)],
}
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def _need(tool: Path | str | None, what: str) -> str:
    if tool is not None and (Path(tool).exists() or shutil.which(str(tool))):
        return str(tool)
    if os.environ.get("WT_REQUIRE_ENGINES") == "1":
        pytest.fail(f"{what} is missing: `make chart` installs it")
    pytest.skip(f"{what} is not installed (`make chart`)")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    command = [_need(HELM, "helm"), *args, "--kube-version", KUBE_VERSION]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def render(*values: str) -> list[dict[str, Any]]:
    args = ["template", "wt", str(CHART), "--namespace", "project", *values]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=list(PROFILES))
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(*PROFILES[request.param])


def load_dashboards_module() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards", ROOT / "tools" / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, spec in pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{name}/{container['name']}", container, spec


def workload(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    """The Deployment, StatefulSet or Job whose pods are this component."""
    return next(
        d
        for d in docs
        if d["kind"] in WORKLOADS
        and d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )


def deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == f"wt-weathertweets-{component}"
    )


def environment(docs: list[dict[str, Any]], doc: dict[str, Any]) -> dict[str, str]:
    """The first container's environment as the kubelet makes it: its ConfigMaps, the values of
    the chart's Secrets (a placeholder for others'), and `$(VAR)` expanded."""
    data = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    container = doc["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(data[source["configMapRef"]["name"]])
    for variable in container.get("env", []):
        if "value" in variable:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            value = secrets.get(ref["name"], {}).get(ref["key"], f"<{ref['name']}/{ref['key']}>")
        env[variable["name"]] = value
    return env


def secret_references(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (Secret, key) a workload's pods read: environment and volumes."""
    spec = doc["spec"]["template"]["spec"]
    found = set()
    for container in spec.get("initContainers", []) + spec["containers"]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                found.add((source["secretRef"]["name"], "*"))
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                found.add((ref["name"], ref["key"]))
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            items = volume["secret"].get("items") or [{"key": "*"}]
            found |= {(volume["secret"]["secretName"], item["key"]) for item in items}
        assert "projected" not in volume, "a projected volume: teach secret_references"
    return found


# --- Helm --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", PROFILES.values(), ids=PROFILES.keys())
def test_helm_lint(values: list[str]) -> None:
    done = helm("lint", str(CHART), "--strict", *values)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_toggle_renders_what_it_promises() -> None:
    kinds = {doc["kind"] for doc in render("-f", str(ALL_ON))}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "StatefulSet", "Ingress"} <= kinds
    assert "Job" in kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    assert {"ServiceMonitor", "ConfigMap", "Secret"} <= kinds


def test_values_schema_rejects_mistakes() -> None:
    assert helm("template", "wt", str(CHART), "--set", "image.tag=latest").returncode != 0
    assert helm("template", "wt", str(CHART), "--set", "gateway.replicas=0").returncode != 0
    assert helm("template", "wt", str(CHART), "--set", "bogus=1").returncode != 0
    too_many = helm("template", "wt", str(CHART), "--set", "archiver.replicas=4")
    assert "must not exceed pipeline.partitions" in too_many.stderr


def test_external_backends_replace_the_bundled_ones() -> None:
    docs = render(
        "--set", "kafka.strimzi.enabled=false", "--set", "kafka.bootstrapServers=k:9092",
        "--set", "mongodb.enabled=false", "--set", "mongodb.externalUrl=mongodb://m:27017/wt",
        "--set", "redis.enabled=false", "--set", "redis.externalUrl=redis://r:6379/0",
    )  # fmt: skip
    kinds = {doc["kind"] for doc in docs}
    assert not {"Kafka", "KafkaUser", "StatefulSet"} & kinds
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    assert secrets["wt-weathertweets-gateway-credentials"] == {
        "mongodb-url": "mongodb://m:27017/wt",
        "redis-url": "redis://r:6379/0",
    }
    assert secrets["wt-weathertweets-archiver-credentials"] == {
        "mongodb-url": "mongodb://m:27017/wt"
    }
    assert "wt-weathertweets-ingest-credentials" not in secrets  # nothing to hold
    ingest = environment(docs, deployment(docs, "ingest"))
    assert ingest["WT_BROKER_URL"] == "kafka://k:9092"
    missing = helm("template", "wt", str(CHART), "--set", "redis.enabled=false")
    assert "redis.externalUrl is required" in missing.stderr


# --- Kubernetes and Strimzi schemas -------------------------------------------------------------


@pytest.mark.parametrize("values", PROFILES.values(), ids=PROFILES.keys())
def test_manifests_validate_strictly_against_kubernetes(values: list[str], tmp_path: Path) -> None:
    rendered = tmp_path / "manifests.yaml"
    rendered.write_text(yaml.safe_dump_all(render(*values)))
    validator = _need(Path(sys.executable).parent / "kubernetes-validate", "kubernetes-validate")
    done = subprocess.run(
        [validator, "--strict", "-k", KUBE_VERSION, str(rendered)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout + done.stderr


def _strimzi(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["apiVersion"].startswith("kafka.strimzi.io")]


def _strimzi_schema(kind: str) -> dict[str, Any]:
    path = ROOT / "deploy" / "schemas" / "strimzi" / f"{kind.lower()}.v1.schema.json"
    return dict(json.loads(path.read_text()))


def test_strimzi_resources_match_the_schemas_kept_in_the_repo(
    manifests: list[dict[str, Any]],
) -> None:
    resources = _strimzi(manifests)
    kinds = {doc["kind"] for doc in resources}
    assert kinds == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    for doc in resources:
        jsonschema.validate(doc, _strimzi_schema(doc["kind"]))


def test_the_strimzi_schemas_catch_mistakes() -> None:
    docs = render()
    mistakes: dict[str, list[Callable[[dict[str, Any]], object]]] = {
        "KafkaNodePool": [
            lambda p: p["spec"].update(roles=["controler"]),
            lambda p: p["spec"].update(replica=1),
            lambda p: p.update(apiVersion="kafka.strimzi.io/v1beta2"),
            lambda p: p["metadata"]["labels"].pop("strimzi.io/cluster"),
        ],
        "KafkaUser": [
            lambda u: u["spec"]["authentication"].update(type="scram-sha-256"),
            lambda u: u["spec"]["authorization"]["acls"][0].update(operations=["Wirte"]),
            lambda u: u["spec"]["authorization"]["acls"][0].update(operation="Write"),  # v1beta2
            lambda u: u["spec"]["authorization"]["acls"][0]["resource"].update(type="topics"),
            lambda u: u["spec"]["authentication"]["password"]["valueFrom"].update(secretKeyRef={}),
            lambda u: u["metadata"]["labels"].pop("strimzi.io/cluster"),
        ],
        "Kafka": [
            lambda k: k["spec"]["kafka"]["listeners"][0]["authentication"].update(type="scram"),
            lambda k: k["spec"]["kafka"]["authorization"].update(type="opa"),
        ],
    }
    for kind, broken_by in mistakes.items():
        resource = next(d for d in docs if d["kind"] == kind)
        jsonschema.validate(resource, _strimzi_schema(kind))
        for mistake in broken_by:
            broken = json.loads(json.dumps(resource))
            mistake(broken)
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(broken, _strimzi_schema(kind))


def test_strimzi_resources_pass_strimzis_own_crd_validators(
    manifests: list[dict[str, Any]],
) -> None:
    node = _need("node", "node")
    _need(ROOT / "tools" / "chart" / "node_modules", "tools/chart/node_modules")
    script = ROOT / "tools" / "chart" / "validate-strimzi.mjs"
    done = subprocess.run(
        [node, str(script)], input=json.dumps(_strimzi(manifests)), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == len(_strimzi(manifests))
    bad = json.loads(json.dumps(_strimzi(manifests)))
    bad[0]["spec"]["kafka"]["listeners"][0]["type"] = "internl"
    done = subprocess.run(
        [node, str(script)], input=json.dumps(bad), capture_output=True, text=True
    )
    assert done.returncode == 1 and "FAIL" in done.stdout


# --- Policies ----------------------------------------------------------------------------------


def test_images_are_pinned(manifests: list[dict[str, Any]]) -> None:
    for name, container, _ in containers(manifests):
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image}"


def test_no_privileged_or_root_container(manifests: list[dict[str, Any]]) -> None:
    for name, container, pod in containers(manifests):
        pod_context = pod.get("securityContext", {})
        context = container.get("securityContext", {})
        assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, name
        assert context.get("runAsUser", pod_context.get("runAsUser", 0)) != 0, name
        assert context.get("privileged") is False, name
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("capabilities", {}).get("drop") == ["ALL"], name
        assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name


def test_every_container_has_probes_and_limits(manifests: list[dict[str, Any]]) -> None:
    for name, container, _ in containers(manifests):
        assert "livenessProbe" in container and "readinessProbe" in container, name
        limits = container.get("resources", {}).get("limits", {})
        requests = container.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests), name


# --- Credentials: a Secret per holder, least privilege, stable renders ----------------------------

SERVICES = ("gateway", "ingest", "archiver", "counter")
ENGINES = {
    "gateway": {"mongodb", "redis"},
    "ingest": {"kafka"},
    "archiver": {"kafka", "mongodb"},
    "counter": {"kafka", "redis"},
}
P = "wt-weathertweets-"
CA = (f"{P}cluster-ca-cert", "ca.crt")  # a public certificate (Strimzi's), not a credential
# Every (Secret, key) each workload reads: its own Secret's keys, the keys and tokens it needs.
READS = {
    "gateway": {(f"{P}gateway-credentials", "mongodb-password"),
                (f"{P}gateway-credentials", "redis-password"),
                (f"{P}api-keys", "api-keys"), (f"{P}internal-token", "token")},
    "ingest": {(f"{P}ingest-credentials", "kafka-password"), (f"{P}internal-token", "token"), CA},
    "archiver": {(f"{P}archiver-credentials", "kafka-password"),
                 (f"{P}archiver-credentials", "mongodb-password"), CA},
    "counter": {(f"{P}counter-credentials", "kafka-password"),
                (f"{P}counter-credentials", "redis-password"), (f"{P}api-keys", "api-keys"), CA},
    "mongodb": {(f"{P}mongodb", f"{user}-password") for user in ("root", "archiver", "gateway")},
    "redis": {(f"{P}redis", f"{user}-password")
              for user in ("admin", "gateway", "counter", "grafana")},
    "locust": {(f"{P}api-keys", "api-key")},
    "locust-worker": {(f"{P}api-keys", "api-key")},
}  # fmt: skip
# One per credential: the write key, the internal token, and each engine user's password.
CREDENTIALS = 12


def credentials(docs: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Every password, key and token in the chart's Secrets: {(Secret, key): value}."""
    return {
        (d["metadata"]["name"], key): value
        for d in docs
        if d["kind"] == "Secret"
        for key, value in d["stringData"].items()
        if key.endswith("-password") or key in ("token", "api-key")
    }


def test_each_workload_reads_its_own_credentials_and_no_other(
    manifests: list[dict[str, Any]],
) -> None:
    seen = set()
    for doc in manifests:
        if doc["kind"] not in WORKLOADS:
            continue
        component = doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        reads = secret_references(doc)
        assert reads == READS[component], doc["metadata"]["name"]
        for name, _ in reads:  # a service's Secret is read by that service alone
            if name.endswith("-credentials"):
                assert name == f"{P}{component}-credentials", (component, name)
        seen.add(component)
    assert set(SERVICES) | {"mongodb", "redis"} <= seen


def test_a_secret_per_service_holding_only_its_engines_credentials(
    manifests: list[dict[str, Any]],
) -> None:
    secrets = {d["metadata"]["name"]: d["stringData"] for d in manifests if d["kind"] == "Secret"}
    for service in SERVICES:
        own = secrets[f"{P}{service}-credentials"]
        assert set(own) == {f"{engine}-password" for engine in ENGINES[service]}, service
        for engine in ENGINES[service] - {"kafka"}:  # the server's copy, which made the user
            assert own[f"{engine}-password"] == secrets[f"{P}{engine}"][f"{service}-password"]
    values = credentials(manifests)
    assert len(set(values.values())) == CREDENTIALS  # no two users share a password
    assert set(secrets[f"{P}api-keys"]["api-keys"].split()) == {secrets[f"{P}api-keys"]["api-key"]}


def test_kafka_users_may_do_what_each_service_does_and_nothing_more(
    manifests: list[dict[str, Any]],
) -> None:
    from weathertweets.backends.kafka import parse_url as parse_kafka_url
    from weathertweets.services import archiver, counter

    users = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in manifests
        if d["kind"] == "KafkaUser"
    }
    assert set(users) == {"ingest", "archiver", "counter"}

    def acls(user: dict[str, Any]) -> set[tuple[str, str, str]]:
        granted = set()
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            assert acl.get("type", "allow") == "allow" and "host" not in acl
            assert resource["patternType"] == "literal"  # never a prefix: exactly these names
            granted |= {(resource["type"], resource["name"], op) for op in acl["operations"]}
        return granted

    topic, dlq = "messages", "messages.dlq"
    assert acls(users["ingest"]) == {("topic", topic, "Write"), ("topic", topic, "Describe")}
    for service, group in (("archiver", archiver.GROUP), ("counter", counter.GROUP)):
        assert acls(users[service]) == {
            ("topic", topic, "Read"), ("topic", topic, "Describe"),  # consume
            ("group", group, "Read"),  # in its own group
            ("topic", dlq, "Write"), ("topic", dlq, "Describe"),  # dead letters
        }, service  # fmt: skip

    kafka = next(d for d in manifests if d["kind"] == "Kafka")
    cluster = kafka["metadata"]["name"]
    (listener,) = kafka["spec"]["kafka"]["listeners"]  # no listener without TLS and SCRAM
    assert (listener["port"], listener["tls"]) == (9093, True)
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    assert "userOperator" in kafka["spec"]["entityOperator"]
    topics = {d["spec"]["topicName"] for d in manifests if d["kind"] == "KafkaTopic"}
    assert topics == {topic, dlq}

    secrets = {d["metadata"]["name"] for d in manifests if d["kind"] == "Secret"}
    for service, user in users.items():
        name = user["metadata"]["name"]
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert user["spec"]["authentication"] == {
            "type": "scram-sha-512",
            "password": {"valueFrom": {"secretKeyRef": {
                "name": f"{P}{service}-credentials", "key": "kafka-password"}}},
        }  # fmt: skip
        assert name not in secrets  # Strimzi's User Operator writes a Secret of the user's name
        docs = manifests
        env = environment(docs, deployment(docs, service))
        config = parse_kafka_url(env["WT_BROKER_URL"])
        assert config == {
            "bootstrap.servers": f"{cluster}-kafka-bootstrap.project.svc:9093",
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": name,
            "sasl.password": credentials(docs)[(f"{P}{service}-credentials", "kafka-password")],
            "ssl.ca.location": "/etc/kafka-ca/ca.crt",
        }
        container = deployment(docs, service)["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "kafka-ca", "mountPath": "/etc/kafka-ca", "readOnly": True} in (
            container["volumeMounts"]
        )


@pytest.mark.parametrize("anonymous", [False, True], ids=["keys", "anonymous"])
def test_each_service_starts_with_what_the_chart_gives_it(anonymous: bool, tmp_path: Path) -> None:
    """The CLI refuses to listen beyond loopback without keys (gateway, counter) or without the
    internal token (ingest): each service gets what it needs, and its URLs read as meant."""
    from pymongo.uri_parser import parse_uri

    from weathertweets.config import SettingError, Settings
    from weathertweets.runtime import check_exposure

    docs = render("--set", f"auth.allowAnonymous={str(anonymous).lower()}")
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    keys_file = tmp_path / "api-keys"
    for service in SERVICES:
        env = environment(docs, deployment(docs, service))
        assert env["WT_ALLOW_ANONYMOUS"] == ("1" if anonymous else "0")
        if "WT_API_KEYS_FILE" in env:
            keys_file.write_text(secrets[f"{P}api-keys"]["api-keys"])
            env["WT_API_KEYS_FILE"] = str(keys_file)
        assert ("WT_API_KEYS_FILE" in env) is (service in ("gateway", "counter") and not anonymous)
        check_exposure(Settings.from_env(env), [service])  # would exit 2 otherwise
        own = secrets.get(f"{P}{service}-credentials", {})
        if "mongodb" in ENGINES[service]:
            uri = parse_uri(env["WT_STORE_URL"])
            assert (uri["username"], uri["password"]) == (service, own["mongodb-password"])
            assert uri["database"] == uri["options"]["authSource"] == "weathertweets"
            assert (uri["options"]["w"], uri["options"]["journal"]) == ("majority", True)
        if "redis" in ENGINES[service]:
            url = urlsplit(env["WT_COUNTER_URL"])
            assert (url.username, url.password) == (service, own["redis-password"])
        if service in ("gateway", "ingest"):
            assert env["WT_INTERNAL_TOKEN"] == secrets[f"{P}internal-token"]["token"]
        else:
            assert "WT_INTERNAL_TOKEN" not in env
    gateway = environment(docs, deployment(docs, "gateway"))
    if not anonymous:  # the control: without its keys, the gateway would not start
        gateway.pop("WT_API_KEYS_FILE")
        with pytest.raises(SettingError, match="WT_API_KEYS"):
            check_exposure(Settings.from_env(gateway), ["gateway"])
    assert (f"{P}api-keys" in secrets) is not anonymous


def test_anonymous_writes_are_a_choice_that_takes_no_keys() -> None:
    docs = render("--set", "auth.allowAnonymous=true", "--set", "locust.enabled=true")
    assert f"{P}api-keys" not in {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for component in ("gateway", "counter", "locust"):
        assert not {name for name, _ in secret_references(workload(docs, component))} & {
            f"{P}api-keys"
        }
    contradiction = helm(
        "template", "wt", str(CHART), "--set", "auth.allowAnonymous=true",
        "--set", "auth.apiKeys={0123456789abcdef}",
    )  # fmt: skip
    assert "auth.allowAnonymous opens writes to anyone" in contradiction.stderr


def test_credentials_are_random_per_install_and_stable_with_a_seed() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["secretSeed"] == "" and values["auth"]["apiKeys"] == []
    assert values["auth"]["internalToken"]["value"] == ""
    for section in (values["mongodb"], values["redis"], values["kafka"]["strimzi"]):
        passwords = {k: v for k, v in section["auth"].items() if k.endswith("Password")}
        assert passwords and set(passwords.values()) == {""}  # never a default password

    first, second = credentials(render()), credentials(render())
    for where, value in first.items():
        assert len(value) >= 24 and value.isalnum(), where
        assert value != second[where], where  # generated per install, never a constant

    seed = ["--set", "secretSeed=" + "0123456789abcdefghijklmnopqrstuv-1"]
    seeded = render(*seed)
    assert credentials(seeded) == credentials(render(*seed))  # GitOps: the same every render
    other = credentials(render("--set", "secretSeed=" + "0123456789abcdefghijklmnopqrstuv-2"))
    assert not set(credentials(seeded).values()) & set(other.values())
    assert len(set(credentials(seeded).values())) == CREDENTIALS
    assert "0123456789abcdefghijklmnopqrstuv" not in yaml.safe_dump_all(seeded)

    given = credentials(render(*seed, "--set", "redis.auth.gatewayPassword=given-password-0123"))
    assert given[(f"{P}gateway-credentials", "redis-password")] == "given-password-0123"
    assert given[(f"{P}redis", "gateway-password")] == "given-password-0123"

    docs = render("-f", str(ALL_ON))
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    values_seen = set(credentials(docs).values())
    for doc in docs:  # no credential outside a Secret, ever
        if doc["kind"] != "Secret":
            text = yaml.safe_dump(doc)
            assert not [v for v in values_seen if v in text], doc["metadata"]["name"]
    for _, container, _ in containers(docs):
        for variable in container.get("env", []):
            if "PASSWORD" in variable["name"] or variable["name"].endswith("TOKEN"):
                assert "valueFrom" in variable and "value" not in variable, variable
    datasource = yaml.safe_load(secrets[f"{P}grafana-redis"]["weathertweets-redis.yaml"])
    (source,) = datasource["datasources"]
    assert source["jsonData"] == {"acl": True, "user": "grafana"}  # the read-only user
    assert source["secureJsonData"]["password"] == secrets[f"{P}redis"]["grafana-password"]


def test_existing_secrets_keep_every_credential_out_of_the_chart() -> None:
    existing = [
        "--set", "auth.existingSecret=my-keys",
        "--set", "auth.internalToken.existingSecret=my-token",
        "--set", "mongodb.auth.existingSecret=my-mongo",
        "--set", "redis.auth.existingSecret=my-redis",
        "--set", "kafka.strimzi.auth.existingSecret=my-kafka",
        "--set", "locust.enabled=true",
        "--set", "dashboards.redisDatasource=false",
    ]  # fmt: skip
    docs = render(*existing)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"] == []
    ca = (f"{P}cluster-ca-cert", "ca.crt")
    assert secret_references(workload(docs, "gateway")) == {
        ("my-mongo", "gateway-password"), ("my-redis", "gateway-password"),
        ("my-keys", "api-keys"), ("my-token", "token"),
    }  # fmt: skip
    assert secret_references(workload(docs, "ingest")) == {
        ("my-kafka", "ingest-password"),
        ("my-token", "token"),
        ca,
    }
    assert secret_references(workload(docs, "archiver")) == {
        ("my-kafka", "archiver-password"),
        ("my-mongo", "archiver-password"),
        ca,
    }
    assert secret_references(workload(docs, "counter")) == {
        ("my-kafka", "counter-password"),
        ("my-redis", "counter-password"),
        ("my-keys", "api-keys"),
        ca,
    }
    assert secret_references(workload(docs, "mongodb")) == {
        ("my-mongo", f"{user}-password") for user in ("root", "archiver", "gateway")
    }
    assert secret_references(workload(docs, "redis")) == {
        ("my-redis", f"{user}-password") for user in ("admin", "gateway", "counter", "grafana")
    }
    assert secret_references(workload(docs, "locust")) == {("my-keys", "api-key")}
    for user in (d for d in docs if d["kind"] == "KafkaUser"):
        ref = user["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
        component = user["metadata"]["labels"]["app.kubernetes.io/component"]
        assert ref == {"name": "my-kafka", "key": f"{component}-password"}
    # Grafana's datasource needs the password when the chart renders: say so, never render a
    # datasource that cannot log in.
    refused = helm("template", "wt", str(CHART), *existing[:-2])
    assert "set dashboards.redisDatasource=false" in refused.stderr


@pytest.mark.parametrize("profile", ["default", "production"])
def test_durability_settings(profile: str) -> None:
    docs = render(*PROFILES[profile])
    brokers = 3 if profile == "production" else 1
    pool = next(d for d in docs if d["kind"] == "KafkaNodePool")
    assert pool["spec"]["replicas"] == brokers
    kafka = next(d for d in docs if d["kind"] == "Kafka")["spec"]["kafka"]["config"]
    assert kafka["default.replication.factor"] == brokers
    assert kafka["min.insync.replicas"] == min(2, brokers)
    for topic in (d for d in docs if d["kind"] == "KafkaTopic"):
        assert topic["spec"]["replicas"] == brokers
        assert topic["spec"]["config"]["min.insync.replicas"] == min(2, brokers)
    redis_conf = next(
        d for d in docs if d["metadata"]["name"] == f"{P}redis" and d["kind"] == "ConfigMap"
    )
    lines = redis_conf["data"]["redis.conf"].splitlines()
    assert {"appendonly yes", "appendfsync always", "maxmemory-policy noeviction"} <= set(lines)
    for service in ("gateway", "archiver"):
        assert (
            "w=majority&journal=true"
            in environment(docs, deployment(docs, service))["WT_STORE_URL"]
        )


def test_every_workload_is_covered_by_a_network_policy(manifests: list[dict[str, Any]]) -> None:
    policies = [
        d["spec"]["podSelector"]["matchLabels"] for d in manifests if d["kind"] == "NetworkPolicy"
    ]
    for doc in manifests:
        if doc["kind"] in WORKLOADS:
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert any(p.items() <= labels.items() for p in policies), doc["metadata"]["name"]


def _ingress_routes(path: str, rules: dict[str, str]) -> bool:
    """Whether an Ingress with these {path: pathType} rules sends `path` on (Kubernetes rules:
    Exact is the whole path, Prefix matches whole path elements)."""
    for rule, kind in rules.items():
        if path == rule or (kind == "Prefix" and path.startswith(rule.rstrip("/") + "/")):
            return True
    return False


def test_ingress_routes_every_path_the_gateway_serves_and_no_internal_one() -> None:
    from unittest.mock import Mock

    from weathertweets.services.gateway import INTERNAL_PATHS, Gateway

    ingress = next(d for d in render() if d["kind"] == "Ingress")
    rules = {p["path"]: p["pathType"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    served = Gateway(Mock(), Mock(), Mock()).router.paths()
    assert {"/static/", "/set", "/insert/", "/dashboard", "/docs", "/openapi.json"} <= served
    for path in served:
        sample = path + "Guatemala" if path.endswith("/") and len(path) > 1 else path
        if path in INTERNAL_PATHS:
            assert not _ingress_routes(sample, rules), f"{path} must stay inside the cluster"
        else:
            assert _ingress_routes(sample, rules), f"the Ingress does not route {path}"
    assert _ingress_routes("/insert/", rules) and _ingress_routes("/static/app.js", rules)
    assert not _ingress_routes("/metrics", rules)


def test_ingress_routes_the_seed_paths_with_limits() -> None:
    ingress = next(d for d in render() if d["kind"] == "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    paths = {p["path"]: p["pathType"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert {"/input": "Prefix", "/insert": "Prefix", "/": "Exact", "/set": "Exact"}.items() <= (
        paths.items()
    )
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "16m"
    assert "nginx.ingress.kubernetes.io/limit-rps" in annotations


def test_workloads_have_disruption_budgets_and_the_gateway_autoscales() -> None:
    docs = render()
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert budgets == {
        f"wt-weathertweets-{c}" for c in ("gateway", "ingest", "archiver", "counter")
    }
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "wt-weathertweets-gateway"
    gateway = next(d for d in docs if d["metadata"]["name"] == "wt-weathertweets-gateway")
    assert "replicas" not in gateway["spec"]  # the HPA owns it


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_the_peak_profile_carries_the_record_peak() -> None:
    """docs/capacity.md's arithmetic, from its inputs block, against the rendered peak profile:
    enough pods of each service at the target utilisation, and a partition for each consumer."""
    text = (ROOT / "docs" / "capacity.md").read_text()
    block = re.search(r"```yaml\n(# capacity inputs.*?)```", text, re.DOTALL)
    assert block, "docs/capacity.md has no capacity inputs block"
    inputs = yaml.safe_load(block.group(1))
    docs = render(*PROFILES["peak"])
    by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment",)}
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    topic = next(d for d in docs if d["kind"] == "KafkaTopic" and d["spec"]["partitions"] > 1)
    peak, utilisation = inputs["peak_tweets_per_s"], inputs["target_utilization"]
    pods = {}
    for service, micros in inputs["per_tweet_cpu_us"].items():
        workload = by_name[f"wt-weathertweets-{service}"]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        limit = _cpu(container["resources"]["limits"]["cpu"])
        needed = -(-peak * micros / 1e6 // (limit * utilisation))  # ceiling
        pods[service] = (
            hpa["spec"]["maxReplicas"] if service == "gateway" else workload["spec"]["replicas"]
        )
        assert pods[service] >= needed, f"{service}: {pods[service]} pods, {needed:.0f} needed"
        assert pods[service] == inputs["pods"][service], "docs/capacity.md and the values agree"
    assert topic["spec"]["partitions"] >= max(pods["archiver"], pods["counter"])
    assert topic["spec"]["partitions"] == inputs["partitions"]


def test_locust_job_is_fed_by_the_generated_data() -> None:
    docs = render("-f", str(ALL_ON))
    data = next(d for d in docs if d["metadata"]["name"] == "wt-weathertweets-locust-data")
    assert json.loads(data["data"]["data.json"]) == generate(10_000, seed=2024)
    jobs = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] == "Job"
    }
    workers = jobs["locust-worker"]["spec"]
    assert workers["parallelism"] == workers["completions"] == 2
    master = jobs["locust"]["spec"]["template"]["spec"]["containers"][0]
    assert "--expect-workers=2" in master["args"]
    for job in jobs.values():  # every Locust process sends the write key
        key = next(e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
                   if e["name"] == "WT_API_KEY")  # fmt: skip
        assert key["valueFrom"]["secretKeyRef"] == {"name": f"{P}api-keys", "key": "api-key"}


# --- Image, compose, dashboards -----------------------------------------------------------------


def test_dockerfile_lints_and_keeps_its_promises() -> None:
    hadolint = _need(Path(sys.executable).parent / "hadolint", "hadolint")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") >= 2  # multi-stage
    assert "USER 10001:10001" in text and "latest" not in text
    assert 'ENTRYPOINT ["weathertweets"]' in text


@pytest.mark.e2e
def test_the_runtime_install_serves_every_command_without_dev_tools(tmp_path: Path) -> None:
    """The Dockerfile's install script, in a fresh venv: no dev extra, so nothing may need one."""
    assert "RUN tools/install-image.sh /opt/weathertweets" in (ROOT / "Dockerfile").read_text()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(ROOT / "tools" / "install-image.sh"), str(venv)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    python = str(venv / "bin" / "python")
    dev_only = subprocess.run([python, "-c", "import mypy"], capture_output=True)
    assert dev_only.returncode != 0, "the runtime install must not bring the dev tools"
    every_module = (
        "import pkgutil, importlib, weathertweets\n"
        "for m in pkgutil.walk_packages(weathertweets.__path__, 'weathertweets.'):\n"
        "    importlib.import_module(m.name)\n"
        "from weathertweets.stack import Stack\n"
    )
    imported = subprocess.run([python, "-c", every_module], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    client = subprocess.run([python, "-c", "from weathertweets.client import Client"])
    assert client.returncode == 0
    listing = "import os, weathertweets.proto as p; print(*os.listdir(p.__path__[0]))"
    stubs = subprocess.run(  # generated by the build, never checked in
        [python, "-c", listing],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert {"ingest_pb2.py", "ingest_pb2_grpc.py", "confproto_pb2_grpc.py"} <= set(stubs)
    cli = str(venv / "bin" / "weathertweets")
    commands = ["up", "serve", "stack", "gen-data", "load"]
    for command in [[], *([c] for c in commands)]:
        done = subprocess.run([cli, *command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage: weathertweets" in done.stdout, (command, done)
    generated = subprocess.run(
        [cli, "gen-data", "-n", "5", "-o", str(tmp_path / "d.json")], capture_output=True
    )
    assert generated.returncode == 0 and len(json.loads((tmp_path / "d.json").read_text())) == 5


def test_the_lock_files_are_current() -> None:
    """uv.lock matches pyproject.toml, and the image's pins are exported from it."""
    uv = _need(ROOT / ".cache" / "tools" / "bin" / "uv", "uv (`make install` installs it)")
    locked = subprocess.run([uv, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True)
    assert locked.returncode == 0, locked.stderr.decode()[-2000:]
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--extra", "locust", "--no-emit-project", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    pins = (ROOT / "requirements" / "image.txt").read_text()
    strip = [line for line in pins.splitlines() if not line.startswith("#")]
    assert [line for line in exported.stdout.splitlines() if not line.startswith("#")] == strip


def test_compose_file_is_consistent() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"gateway", "ingest", "archiver", "counter", "kafka", "mongodb", "redis"} <= set(
        services
    )
    assert {"prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
    env = services["gateway"]["environment"]
    assert env["WT_BROKER_URL"] == "kafka://kafka:9092"
    assert "@mongodb:27017" in env["WT_STORE_URL"] and "@redis:6379" in env["WT_COUNTER_URL"]


def test_dashboards_are_up_to_date_and_well_formed() -> None:
    build = load_dashboards_module()
    for name, text in build.render().items():
        assert (CHART / "dashboards" / name).read_text() == text, f"run `make dashboards` ({name})"
        board = json.loads(text)
        assert board["panels"]
        for item in board["panels"]:
            assert item["targets"] and item["datasource"]["uid"].startswith("${")
    titles = {p["title"] for p in json.loads(build.render()["weathertweets.json"])["panels"]}
    for wanted in ("Tweets counted", "Share per country", "Top countries", "Tweets per country",
                   "Top texts in $pais", "Recent tweets", "Tweets per second",
                   "Consumer lag (records)", "Rejected requests by reason"):  # fmt: skip
        assert wanted in titles
