"""Static checks of everything that deploys: image, compose file, Helm chart, dashboards.

No Docker engine runs here, so the chart is linted and rendered by Helm, the manifests validated
against the Kubernetes 1.33 schemas (strict) and the Strimzi CRDs, and the rendered output held
to the project's policies. Against a real API server: tests/test_k8s_apiserver.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT
from weathertweets.gendata import generate

CHART = ROOT / "deploy" / "helm" / "weathertweets"
HELM = ROOT / ".cache" / "engines" / "bin" / "helm"
KUBE_VERSION = "1.33.0"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
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


@pytest.fixture(scope="module", params=["default", "all-on"])
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render() if request.param == "default" else render("-f", str(ALL_ON))


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


# --- Helm --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_ON)]], ids=["default", "all-on"])
def test_helm_lint(values: list[str]) -> None:
    done = helm("lint", str(CHART), "--strict", *values)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_toggle_renders_what_it_promises() -> None:
    kinds = {doc["kind"] for doc in render("-f", str(ALL_ON))}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "StatefulSet", "Ingress", "Job"} <= kinds
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
    assert not {"Kafka", "StatefulSet"} & kinds
    secret = next(d for d in docs if d["metadata"]["name"] == "wt-weathertweets-secrets")
    assert secret["stringData"]["WT_STORE_URL"] == "mongodb://m:27017/wt"
    config = next(d for d in docs if d["metadata"]["name"] == "wt-weathertweets-config")
    assert config["data"]["WT_BROKER_URL"] == "kafka://k:9092"
    missing = helm("template", "wt", str(CHART), "--set", "redis.enabled=false")
    assert "redis.externalUrl is required" in missing.stderr


# --- Kubernetes and Strimzi schemas -------------------------------------------------------------


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_ON)]], ids=["default", "all-on"])
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


def test_strimzi_resources_match_the_schemas_kept_in_the_repo(
    manifests: list[dict[str, Any]],
) -> None:
    resources = _strimzi(manifests)
    assert {doc["kind"] for doc in resources} == {"Kafka", "KafkaNodePool", "KafkaTopic"}
    for doc in resources:
        schema_file = (
            ROOT / "deploy" / "schemas" / "strimzi" / f"{doc['kind'].lower()}.v1.schema.json"
        )
        jsonschema.validate(doc, json.loads(schema_file.read_text()))


def test_the_strimzi_schemas_catch_mistakes() -> None:
    pool = next(d for d in render() if d["kind"] == "KafkaNodePool")
    schema = json.loads((ROOT / "deploy/schemas/strimzi/kafkanodepool.v1.schema.json").read_text())
    mistakes: list[Callable[[dict[str, Any]], object]] = [
        lambda p: p["spec"].update(roles=["controler"]),
        lambda p: p["spec"].update(replica=1),
        lambda p: p.update(apiVersion="kafka.strimzi.io/v1beta2"),
        lambda p: p["metadata"]["labels"].pop("strimzi.io/cluster"),
    ]
    for mistake in mistakes:
        broken = json.loads(json.dumps(pool))
        mistake(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


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
    assert done.stdout.count("ok ") == 3
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


def test_no_plaintext_default_password() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["mongodb"]["auth"]["password"] == ""
    assert values["redis"]["auth"]["password"] == ""
    first, second = render(), render()
    secrets = [
        {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
        for docs in (first, second)
    ]
    name = "wt-weathertweets-secrets"
    for key in ("mongodb-password", "redis-password"):
        password = secrets[0][name][key]
        assert len(password) >= 24 and password.isalnum()
        assert password != secrets[1][name][key]  # generated per install, not a constant
    for _, container, _ in containers(first):
        for variable in container.get("env", []):
            if "PASSWORD" in variable["name"]:
                assert "valueFrom" in variable and "value" not in variable, variable
    datasource = secrets[0]["wt-weathertweets-grafana-redis"]["weathertweets-redis.yaml"]
    assert secrets[0][name]["redis-password"] in datasource


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
