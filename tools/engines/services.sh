#!/usr/bin/env bash
# Install (the first time) and run the real engines on 127.0.0.1, on non-default ports:
# Apache Kafka (KRaft, from Maven Central jars), Redis (Debian), a MongoDB-wire server
# (FerretDB v1 embedded in tools/engines/ferretdb), Prometheus (Debian).
#
#   tools/engines/services.sh up       # idempotent; writes .services.env
#   tools/engines/services.sh down     # idempotent
#   tools/engines/services.sh status
#
# Downloads and builds are cached in .cache/engines; data, logs and pids live in .cache/run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tools/engines
CACHE=$ROOT/.cache/engines
RUN=$ROOT/.cache/run
ENV_FILE=$ROOT/.services.env

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")
KAFKA_LIB=$CACHE/kafka-$KAFKA_VERSION
FERRETDB_BIN=$CACHE/bin/ferretdb-embedded

KAFKA_PORT=${WT_KAFKA_PORT:-19092}
KAFKA_NODES=${KAFKA_NODES:-1}
REDIS_PORT=${WT_REDIS_PORT:-16379}
MONGO_PORT=${WT_MONGO_PORT:-27018}
PROMETHEUS_PORT=${WT_PROMETHEUS_PORT:-19090}
FERRETDB_IDLE=${FERRETDB_IDLE:-1} # 1: FerretDB in Linux's idle scheduling class (SCHED_IDLE)
TARGETS=$RUN/prometheus/targets.json

say() { printf '%s\n' "services: $*"; }
die() { printf '%s\n' "services: error: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds log
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$2" && return 0
    sleep 0.1
  done
  tail -n 30 "$4" >&2 || true
  die "$1 did not open port $2 within $3 s (log: $4)"
}

running() { # name: its process exists and is not a zombie (a killed one nobody reaped)
  local pid_file=$RUN/$1.pid state
  [[ -f $pid_file ]] || return 1
  state=$(ps -o stat= -p "$(cat "$pid_file")" 2>/dev/null) || return 1
  [[ -n $state && $state != Z* ]]
}

launch() { # name port log command...
  local name=$1 port=$2 log=$3
  shift 3
  port_open "$port" && die "port $port is taken by another program; stop it or set WT_*_PORT"
  mkdir -p "$(dirname "$log")"
  setsid nohup "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# --- installation ----------------------------------------------------------------------------

install_debian_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v prometheus >/dev/null || missing+=(prometheus)
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "install ${missing[*]} (Debian packages), or run this as root"
  say "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start system services where an init system runs; ours run on our own ports.
  command -v systemctl >/dev/null && systemctl disable --now redis-server prometheus 2>/dev/null || true
}

install_kafka() {
  local stamp
  stamp=$(sha256sum "$HERE/kafka/pom.xml" | cut -d' ' -f1)
  [[ -f $KAFKA_LIB/.complete && $(cat "$KAFKA_LIB/.complete") == "$stamp" ]] && return 0
  command -v java >/dev/null || die "Kafka needs Java 17+ (Debian: openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "fetching Kafka needs Maven (Debian: maven)"
  say "fetching Apache Kafka $KAFKA_VERSION from Maven Central (once)"
  rm -rf "$KAFKA_LIB"
  mkdir -p "$CACHE"
  (cd "$HERE/kafka" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_LIB") >"$CACHE/maven.log" 2>&1 ||
    { tail -n 30 "$CACHE/maven.log" >&2; die "Maven could not fetch Kafka (log: $CACHE/maven.log)"; }
  echo "$stamp" >"$KAFKA_LIB/.complete"
}

install_ferretdb() {
  local sources=("$HERE/ferretdb/main.go" "$HERE/ferretdb/go.mod" "$HERE/ferretdb/go.sum")
  if [[ -x $FERRETDB_BIN ]]; then
    local newer
    newer=$(find "${sources[@]}" -newer "$FERRETDB_BIN" | head -n 1)
    [[ -z $newer ]] && return 0
  fi
  command -v go >/dev/null || die "building the MongoDB-wire server needs Go 1.24+"
  say "building FerretDB (embedded, SQLite storage) with Go (once)"
  mkdir -p "$(dirname "$FERRETDB_BIN")"
  (cd "$HERE/ferretdb" && go build -trimpath -o "$FERRETDB_BIN" .)
}

# --- servers ---------------------------------------------------------------------------------

start_redis() {
  running redis && return 0
  local dir=$RUN/redis
  mkdir -p "$dir"
  launch redis "$REDIS_PORT" "$dir/redis.log" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
    --dir "$dir" --appendonly yes --appendfsync always --save "" --daemonize no
  wait_port redis "$REDIS_PORT" 20 "$dir/redis.log"
}

# One node by default; KAFKA_NODES=3 runs three (ports PORT, PORT+100, PORT+200; controllers on
# the next port up each), topics with three replicas and min.insync.replicas=2.
kafka_node_port() { echo $((KAFKA_PORT + 100 * ($1 - 1))); }

start_kafka() {
  local node voters=() quorum cluster_id name dir port layout
  for ((node = 1; node <= KAFKA_NODES; node++)); do
    voters+=("$node@127.0.0.1:$(($(kafka_node_port "$node") + 1))")
  done
  quorum=$(IFS=,; echo "${voters[*]}")
  # Every node of the cluster must have the same layout before any starts (a folder from before
  # the layout was written down is a single node's): else two clusters could form.
  for ((node = 1; node <= KAFKA_NODES; node++)); do
    dir=$RUN/$(kafka_node_name "$node")
    [[ -f $dir/data/meta.properties ]] || continue
    layout=$(cat "$dir/voters" 2>/dev/null || echo "1@127.0.0.1:$((KAFKA_PORT + 1))")
    [[ $layout == "$quorum" ]] ||
      die "$dir was made for another KAFKA_NODES; run 'make services-down' and remove $RUN/kafka*"
  done
  [[ -f $RUN/kafka.cluster-id ]] ||
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$RUN/kafka.cluster-id"
  cluster_id=$(cat "$RUN/kafka.cluster-id")
  for ((node = 1; node <= KAFKA_NODES; node++)); do
    name=$(kafka_node_name "$node")
    running "$name" && continue
    dir=$RUN/$name port=$(kafka_node_port "$node")
    mkdir -p "$dir"
    echo "$quorum" >"$dir/voters"
    launch "$name" "$port" "$dir/kafka.log" "$HERE/kafka-node.sh" "$dir" "$node" 127.0.0.1 \
      "$port" $((port + 1)) "$quorum" "$cluster_id"
  done
  for ((node = 1; node <= KAFKA_NODES; node++)); do
    name=$(kafka_node_name "$node")
    wait_port "$name" "$(kafka_node_port "$node")" 90 "$RUN/$name/kafka.log"
  done
}

# The first node keeps the single node's name and folder: `kafka`, then `kafka-2`, `kafka-3`.
kafka_node_name() { (($1 == 1)) && echo kafka || echo "kafka-$1"; }

kafka_bootstrap() {
  local node servers=()
  for ((node = 1; node <= KAFKA_NODES; node++)); do
    servers+=("127.0.0.1:$(kafka_node_port "$node")")
  done
  (IFS=,; echo "${servers[*]}")
}

start_mongo() {
  running ferretdb && return 0
  local dir=$RUN/ferretdb
  mkdir -p "$dir/data"
  # The archive's writes are work the sinks defer (they run in the idle class under `stack`);
  # an insert they send at an idle moment would otherwise take its server's CPU from the
  # gateway and Kafka. Every thread FerretDB starts inherits the class.
  local idle=()
  [[ $FERRETDB_IDLE == 1 ]] && command -v chrt >/dev/null && idle=(chrt --idle 0)
  launch ferretdb "$MONGO_PORT" "$dir/ferretdb.log" "${idle[@]}" "$FERRETDB_BIN" -listen "127.0.0.1:$MONGO_PORT" -dir "$dir/data"
  wait_port ferretdb "$MONGO_PORT" 30 "$dir/ferretdb.log"
}

start_prometheus() {
  running prometheus && return 0
  local dir=$RUN/prometheus
  mkdir -p "$dir/tsdb"
  if [[ ! -f $TARGETS ]]; then # the default ports of `weathertweets stack`
    cat >"$TARGETS" <<JSON
[{"targets": ["127.0.0.1:8080"], "labels": {"service": "gateway"}},
 {"targets": ["127.0.0.1:8002"], "labels": {"service": "ingest"}},
 {"targets": ["127.0.0.1:8001"], "labels": {"service": "archiver"}},
 {"targets": ["127.0.0.1:8000"], "labels": {"service": "counter"}}]
JSON
  fi
  sed "s:@TARGETS@:$TARGETS:" "$HERE/prometheus.yml.in" >"$dir/prometheus.yml"
  launch prometheus "$PROMETHEUS_PORT" "$dir/prometheus.log" prometheus --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/tsdb" --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    --storage.tsdb.retention.time=2d
  wait_port prometheus "$PROMETHEUS_PORT" 30 "$dir/prometheus.log"
}

write_env() {
  cat >"$ENV_FILE" <<ENV
# Written by \`make services\`: set -a; . ./.services.env; set +a
WT_BROKER_URL=kafka://$(kafka_bootstrap)
WT_STORE_URL=mongodb://127.0.0.1:$MONGO_PORT/weathertweets
WT_COUNTER_URL=redis://127.0.0.1:$REDIS_PORT/0
WT_PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT
WT_PROMETHEUS_TARGETS_FILE=$TARGETS
ENV
}

# Every Kafka node this folder knows: those KAFKA_NODES asks for and any still running.
kafka_nodes() {
  local node=$KAFKA_NODES
  while [[ -f $RUN/kafka-$((node + 1)).pid ]]; do node=$((node + 1)); done
  echo "$node"
}

status() {
  printf '%-11s %-8s %-9s %s\n' service state pid address
  local name port pid state node names=()
  for ((node = 1; node <= $(kafka_nodes); node++)); do names+=("$(kafka_node_name "$node")"); done
  for name in "${names[@]}" redis ferretdb prometheus; do
    case $name in
    kafka) port=$(kafka_node_port 1) ;;
    kafka-*) port=$(kafka_node_port "${name#kafka-}") ;;
    redis) port=$REDIS_PORT ;;
    ferretdb) port=$MONGO_PORT ;;
    prometheus) port=$PROMETHEUS_PORT ;;
    esac
    pid=-
    state=stopped
    if running "$name"; then
      pid=$(cat "$RUN/$name.pid")
      state=running
    fi
    printf '%-11s %-8s %-9s %s\n' "$name" "$state" "$pid" "127.0.0.1:$port"
  done
  [[ -f $ENV_FILE ]] && printf 'environment: %s\n' "$ENV_FILE"
  return 0
}

up() {
  mkdir -p "$RUN" "$RUN/prometheus"
  install_debian_packages
  install_kafka
  install_ferretdb
  start_redis
  start_mongo
  start_prometheus
  start_kafka
  write_env
  status
}

down() {
  local group name pid i node names=() stopping=() grace
  for ((node = 1; node <= $(kafka_nodes); node++)); do names+=("$(kafka_node_name "$node")"); done
  # The Kafka nodes together, and 10 s only: the last ones' controlled shutdown waits for a
  # quorum of controllers that is already gone (their logs recover at the next start).
  for group in prometheus "${names[*]}" ferretdb redis; do
    stopping=() grace=300
    [[ $group == *" "* ]] && grace=100
    for name in $group; do
      running "$name" || { rm -f "$RUN/$name.pid"; continue; }
      kill -TERM "$(cat "$RUN/$name.pid")" 2>/dev/null || true
      stopping+=("$name")
    done
    for name in "${stopping[@]}"; do
      pid=$(cat "$RUN/$name.pid")
      for ((i = 0; i < grace; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
      rm -f "$RUN/$name.pid"
      say "stopped $name (pid $pid)"
    done
  done
  rm -f "$ENV_FILE" # nothing listens there any more: tests must not think otherwise
  status
}

case ${1:-up} in
up) up ;;
down) down ;;
status) status ;;
*) die "usage: $0 up|down|status" ;;
esac
