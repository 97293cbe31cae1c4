#!/usr/bin/env bash
# A Kubernetes API server for testing the chart: etcd and kube-apiserver v1.33.5 on 127.0.0.1,
# TLS (openssl), a static admin token, RBAC and the default admission plugins (PodSecurity
# included), with the ServiceMonitor and Strimzi CRDs registered (again by `up` on a running
# server, so that one started before a CRD was added gets it). No kubelet, no controllers:
# objects are validated, admitted and stored, and nothing runs.
#
#   tools/k8s/cluster.sh up       # build once (tools/k8s/build.sh), start, write the kubeconfig
#   tools/k8s/cluster.sh down     # stop exactly the processes `up` started; idempotent
#   tools/k8s/cluster.sh status
#
# Ports: WT_K8S_API_PORT (16443), WT_K8S_ETCD_PORT (12379), WT_K8S_ETCD_PEER_PORT (12380).
# Binaries live in .cache/k8s/bin; keys, data, logs and pids in .cache/k8s/run (fresh at each
# start); the kubeconfig is .cache/k8s/kubeconfig, there only while the server runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tools/k8s
BIN=$(realpath -m "${WT_K8S_BIN:-$ROOT/.cache/k8s/bin}")
RUN=$ROOT/.cache/k8s/run
KUBECONFIG_FILE=$ROOT/.cache/k8s/kubeconfig
API_PORT=${WT_K8S_API_PORT:-16443}
ETCD_PORT=${WT_K8S_ETCD_PORT:-12379}
ETCD_PEER_PORT=${WT_K8S_ETCD_PEER_PORT:-12380}
PROMETHEUS_OPERATOR=github.com/prometheus-operator/prometheus-operator@v0.85.0
SERVICEMONITOR_CRD=example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml

say() { printf '%s\n' "k8s: $*"; }
die() { printf '%s\n' "k8s: error: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid in $RUN/<name>.pid, if that process is alive and still runs our binary (a pid reused by
# an unrelated program is never ours).
ours() {
  local pid_file=$RUN/$1.pid pid state exe
  [[ -f $pid_file ]] || return 1
  pid=$(cat "$pid_file")
  state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [[ -n $state && $state != Z* ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$BIN/$1" ]] || return 1
  printf '%s' "$pid"
}

launch() { # name "ports" command...
  local name=$1 port
  for port in $2; do
    port_open "$port" && die "port $port is taken by another program; stop it or set WT_K8S_*_PORT"
  done
  shift 2
  setsid nohup "$@" >>"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

stop() { # name: TERM, then KILL after 20 s
  local pid i
  pid=$(ours "$1") || { rm -f "$RUN/$1.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    ours "$1" >/dev/null || break
    sleep 0.1
  done
  if ours "$1" >/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$RUN/$1.pid"
  say "stopped $1 (pid $pid)"
}

# --- keys and configuration ------------------------------------------------------------------

make_pki() {
  local pki=$RUN/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=weathertweets-test-ca \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -new -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1" \
    >"$pki/apiserver.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/service-account.key" 2048 2>/dev/null
  openssl rsa -in "$pki/service-account.key" -pubout -out "$pki/service-account.pub" 2>/dev/null
  printf '%s,wt-admin,wt-admin,system:masters\n' "$(openssl rand -hex 24)" >"$pki/tokens.csv"
  chmod 600 "$pki"/*.key "$pki/tokens.csv"
}

write_kubeconfig() {
  local token ca
  token=$(cut -d, -f1 "$RUN/pki/tokens.csv")
  ca=$(base64 -w0 "$RUN/pki/ca.crt")
  (
    umask 077
    cat >"$KUBECONFIG_FILE.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: weathertweets-test
    cluster:
      server: https://127.0.0.1:$API_PORT
      certificate-authority-data: $ca
users:
  - name: wt-admin
    user:
      token: $token
contexts:
  - name: weathertweets-test
    context: {cluster: weathertweets-test, user: wt-admin}
current-context: weathertweets-test
EOF
  )
  mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
}

# --- servers ---------------------------------------------------------------------------------

start_etcd() {
  launch etcd "$ETCD_PORT $ETCD_PEER_PORT" "$BIN/etcd" --name wt-test --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "wt-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
}

start_apiserver() {
  local pki=$RUN/pki
  # --endpoint-reconciler-type=none: the `kubernetes` Service gets no loopback endpoint (which
  # the API would refuse anyway); nothing here routes to it.
  launch kube-apiserver "$API_PORT" "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --token-auth-file "$pki/tokens.csv" --anonymous-auth=false \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/service-account.pub" \
    --service-account-signing-key-file "$pki/service-account.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --endpoint-reconciler-type none \
    --profiling=false
}

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

wait_ready() { # seconds: until /readyz answers ok (every post-start hook done, RBAC roles in)
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    ours etcd >/dev/null || { tail -n 30 "$RUN/etcd.log" >&2; die "etcd exited (log: $RUN/etcd.log)"; }
    ours kube-apiserver >/dev/null || {
      tail -n 30 "$RUN/kube-apiserver.log" >&2
      die "kube-apiserver exited (log: $RUN/kube-apiserver.log)"
    }
    [[ $(kubectl get --raw /readyz 2>/dev/null) == ok ]] && return 0
    sleep 0.1
  done
  tail -n 30 "$RUN/kube-apiserver.log" >&2
  die "kube-apiserver was not ready within $1 s (log: $RUN/kube-apiserver.log)"
}

register_crds() {
  local dir
  command -v go >/dev/null || die "fetching the ServiceMonitor CRD needs Go"
  dir=$(cd "$HERE" && go mod download -json "$PROMETHEUS_OPERATOR" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -f $dir/$SERVICEMONITOR_CRD ]] || die "no $SERVICEMONITOR_CRD in $PROMETHEUS_OPERATOR"
  python3 "$HERE/strimzi_crds.py" "$ROOT/deploy/schemas/strimzi" >"$RUN/strimzi-crds.json"
  kubectl apply --server-side --field-manager wt-k8s -f "$dir/$SERVICEMONITOR_CRD" \
    -f "$RUN/strimzi-crds.json" >/dev/null
  kubectl wait --for condition=Established --timeout 60s \
    crd/servicemonitors.monitoring.coreos.com crd/kafkas.kafka.strimzi.io \
    crd/kafkanodepools.kafka.strimzi.io crd/kafkatopics.kafka.strimzi.io \
    crd/kafkausers.kafka.strimzi.io >/dev/null
}

up() {
  if ours kube-apiserver >/dev/null && ours etcd >/dev/null && [[ -f $KUBECONFIG_FILE ]]; then
    register_crds # idempotent: a server started before a CRD was added gets it now
    say "already running: export KUBECONFIG=$KUBECONFIG_FILE"
    return 0
  fi
  down >/dev/null
  "$HERE/build.sh"
  rm -rf "$RUN"
  mkdir -p "$RUN"
  trap 'stop_after_failure' EXIT
  make_pki
  start_etcd
  start_apiserver
  write_kubeconfig
  wait_ready 90
  register_crds
  trap - EXIT
  say "kube-apiserver $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n 1)" \
    "on https://127.0.0.1:$API_PORT (etcd on 127.0.0.1:$ETCD_PORT)"
  say "export KUBECONFIG=$KUBECONFIG_FILE"
}

stop_after_failure() { # never leave half a cluster running; the logs stay in .cache/k8s/run
  local rc=$?
  ((rc == 0)) && return 0
  say "start failed: stopping what it started"
  down >&2 || true
  exit "$rc"
}

down() {
  rm -f "$KUBECONFIG_FILE"
  stop kube-apiserver
  stop etcd
}

status() {
  local name pid rc=0
  for name in etcd kube-apiserver; do
    if pid=$(ours "$name"); then say "$name running (pid $pid)"; else say "$name stopped"; rc=1; fi
  done
  return "$rc"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
