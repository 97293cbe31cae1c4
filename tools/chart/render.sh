#!/usr/bin/env bash
# `make chart`: install Helm (once, with Go, into .cache/engines/bin), lint the chart, and render
# it with its default values into build/chart/default.yaml, with every toggle on into
# build/chart/all.yaml, with the durable profile into build/chart/production.yaml, and with the
# durable profile sized for 143 199 tweets/s (docs/capacity.md) into build/chart/peak.yaml.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHART=$ROOT/deploy/helm/weathertweets
HELM=$ROOT/.cache/engines/bin/helm
HELM_VERSION=v3.18.6
KUBE_VERSION=${WT_KUBE_VERSION:-1.33.0}

if [[ ! -x $HELM ]] || ! "$HELM" version --short 2>/dev/null | grep -q "^${HELM_VERSION%.*}"; then
  command -v go >/dev/null || { echo "chart: installing Helm needs Go" >&2; exit 1; }
  echo "chart: building Helm $HELM_VERSION with Go (once, a few minutes)"
  GOBIN=$(dirname "$HELM") go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
if [[ ! -d $ROOT/tools/chart/node_modules ]]; then
  (cd "$ROOT/tools/chart" && npm ci --silent --no-audit --no-fund)
fi

mkdir -p "$ROOT/build/chart"
"$HELM" lint "$CHART" --kube-version "$KUBE_VERSION" --quiet
"$HELM" lint "$CHART" --kube-version "$KUBE_VERSION" --quiet -f "$CHART/ci/all-on-values.yaml"
"$HELM" lint "$CHART" --kube-version "$KUBE_VERSION" --quiet -f "$CHART/ci/production-values.yaml"
"$HELM" lint "$CHART" --kube-version "$KUBE_VERSION" --quiet -f "$CHART/ci/production-values.yaml" \
  -f "$CHART/ci/peak-values.yaml"
"$HELM" template wt "$CHART" --namespace project --kube-version "$KUBE_VERSION" \
  >"$ROOT/build/chart/default.yaml"
"$HELM" template wt "$CHART" --namespace project --kube-version "$KUBE_VERSION" \
  -f "$CHART/ci/all-on-values.yaml" >"$ROOT/build/chart/all.yaml"
"$HELM" template wt "$CHART" --namespace project --kube-version "$KUBE_VERSION" \
  -f "$CHART/ci/production-values.yaml" >"$ROOT/build/chart/production.yaml"
"$HELM" template wt "$CHART" --namespace project --kube-version "$KUBE_VERSION" \
  -f "$CHART/ci/production-values.yaml" -f "$CHART/ci/peak-values.yaml" >"$ROOT/build/chart/peak.yaml"
echo "chart: rendered build/chart/{default,all,production,peak}.yaml (Kubernetes $KUBE_VERSION)"
