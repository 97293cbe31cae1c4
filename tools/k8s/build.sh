#!/usr/bin/env bash
# Build etcd, kube-apiserver and kubectl from the Go module proxy (once) into .cache/k8s/bin.
# The wrapper modules tools/k8s/etcd and tools/k8s/apiserver pin the versions; a binary is rebuilt
# only when its module files or this script change. Cold: ~125 MB of modules and ~5 minutes of
# compiling on 2 cores; warm: nothing to do.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tools/k8s
BIN=$(realpath -m "${WT_K8S_BIN:-$ROOT/.cache/k8s/bin}")
KUBE_VERSION=v1.33.5

say() { printf '%s\n' "k8s-build: $*"; }
die() { printf '%s\n' "k8s-build: error: $*" >&2; exit 1; }

# The version the binaries report: without it the server says v0.0.0-master and the chart's
# kubeVersion constraint (>=1.27.0-0) fails.
version_ldflags() {
  local minor=${KUBE_VERSION#v1.} flags="-s -w" pkg
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean"
  done
  printf '%s' "$flags"
}

stamp_of() { # module dir: what the binaries were built from
  cat "$1/go.mod" "$1/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

up_to_date() { # module stamp-file binaries...
  local module=$1 stamp=$BIN/.$2.stamp binary
  shift 2
  [[ -f $stamp && $(cat "$stamp") == "$(stamp_of "$module")" ]] || return 1
  for binary in "$@"; do [[ -x $BIN/$binary ]] || return 1; done
}

build() { # module stamp-file output ldflags packages...
  local module=$1 stamp=$2 output=$3 ldflags=$4
  shift 4
  (cd "$module" && nice go build -trimpath -ldflags "$ldflags" -o "$output" "$@")
  stamp_of "$module" >"$BIN/.$stamp.stamp"
}

command -v go >/dev/null || die "building etcd and kube-apiserver needs Go 1.24+ (Debian: golang)"
mkdir -p "$BIN"

if ! up_to_date "$HERE/etcd" etcd etcd; then
  say "building etcd with Go (once, about a minute)"
  build "$HERE/etcd" etcd "$BIN/etcd" "-s -w" go.etcd.io/etcd/server/v3
fi
if ! up_to_date "$HERE/apiserver" apiserver kube-apiserver kubectl; then
  say "building kube-apiserver and kubectl $KUBE_VERSION with Go (once, about 5 minutes)"
  build "$HERE/apiserver" apiserver "$BIN/" "$(version_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
fi
"$BIN/kube-apiserver" --version | grep -qx "Kubernetes $KUBE_VERSION" ||
  die "kube-apiserver reports '$("$BIN/kube-apiserver" --version)', not $KUBE_VERSION"
say "etcd, kube-apiserver and kubectl are in ${BIN#"$ROOT"/}"
