"""The Kubernetes API server that `make k8s-up` (tools/k8s/cluster.sh) starts, seen from tests.

Without it the tests that need it are skipped — unless WT_REQUIRE_ENGINES=1 (set by `make test`,
so by CI), when a missing server is a failure, never a silent skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

KUBECONFIG = ROOT / ".cache" / "k8s" / "kubeconfig"
KUBECTL = ROOT / ".cache" / "k8s" / "bin" / "kubectl"
HELM = ROOT / ".cache" / "engines" / "bin" / "helm"
SERVER_VERSION = "v1.33.5"
# What the API server says besides errors: kubectl prints "Warning: ...", Helm logs it as klog
# does ('I1129 20:48:09.346407 9652 warnings.go:110] "Warning: ..."').
WARNING = re.compile(r"^Warning: |warnings\.go:\d+\]", re.MULTILINE)
# PodSecurity "restricted" enforced: pods that break it are refused, and a workload whose pod
# template breaks it is warned about (the warn level defaults to the enforce level).
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if WARNING.search(line)]


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path

    def run(self, command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run(
            command, input=stdin, capture_output=True, text=True, env=env, timeout=300
        )

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run([str(KUBECTL), *args], stdin)

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(HELM), *args])

    def get(self, *args: str) -> dict[str, Any]:
        done = self.kubectl("get", *args, "-o", "json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def namespace(self) -> str:
        """A new namespace labelled for PodSecurity "restricted"."""
        name = f"wt-{uuid.uuid4().hex[:8]}"
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": RESTRICTED},
        }
        done = self.kubectl("create", "-f", "-", stdin=json.dumps(manifest))
        assert done.returncode == 0, done.stderr
        return name

    def dry_run(self, namespace: str, manifests: str) -> subprocess.CompletedProcess[str]:
        """Server-side apply, validated and admitted by the server, stored nowhere."""
        return self.kubectl(
            "apply", "--server-side", "--dry-run=server", "--validate=strict",
            "--field-manager=weathertweets-tests", "-n", namespace, "-f", "-",
            stdin=manifests,
        )  # fmt: skip


def require_cluster() -> Cluster:
    missing = [p.name for p in (KUBECONFIG, KUBECTL, HELM) if not p.exists()]
    cluster = Cluster(KUBECONFIG)
    version = None if missing else cluster.kubectl("version", "-o", "json")
    if version is None or version.returncode != 0:
        why = f"{', '.join(missing)} missing" if missing else "the API server does not answer"
        if os.environ.get("WT_REQUIRE_ENGINES") == "1":
            pytest.fail(f"{why}: `make k8s-up` (and `make chart`) first")
        pytest.skip(f"no Kubernetes API server ({why}; `make k8s-up` starts one)")
    assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == SERVER_VERSION
    return cluster
