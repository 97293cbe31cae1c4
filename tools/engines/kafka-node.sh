#!/usr/bin/env bash
# One Apache Kafka node in KRaft mode (broker and controller in one JVM), from the jars that
# `make services` fetched. Writes DIR/server.properties, formats DIR/data the first time, then
# execs Java, so the caller's pid is Kafka's.
#
#   kafka-node.sh DIR NODE_ID HOST PORT CONTROLLER_PORT VOTERS [CLUSTER_ID]
#
# VOTERS is every node's controller, `1@host:port,2@host:port,...`: the nodes of one cluster
# share it and CLUSTER_ID (22 characters of base64url; one is made up when left out). With one
# voter, topics get one replica; with three or more, three replicas and min.insync.replicas=2,
# so a record acknowledged with acks=all survives the loss of any one broker.
# KAFKA_HEAP (default 512m) sets the JVM's heap.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/tools/engines/kafka/pom.xml")
LIB=$ROOT/.cache/engines/kafka-$VERSION

(($# >= 6)) || { echo "usage: $0 DIR NODE_ID HOST PORT CONTROLLER_PORT VOTERS [CLUSTER_ID]" >&2; exit 2; }
DIR=$1 NODE_ID=$2 HOST=$3 PORT=$4 CONTROLLER_PORT=$5 VOTERS=$6
CLUSTER_ID=${7:-$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')}
[[ -d $LIB ]] || { echo "kafka-node: no Kafka jars in $LIB: run 'make services' first" >&2; exit 1; }

IFS=, read -ra voters <<<"$VOTERS"
replicas=$((${#voters[@]} >= 3 ? 3 : 1))
min_isr=$((replicas > 1 ? replicas - 1 : 1))

mkdir -p "$DIR/data"
cat >"$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$VOTERS
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data
num.partitions=3
default.replication.factor=$replicas
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
replica.lag.time.max.ms=10000
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS

java=(java -Xms128m "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseG1GC
  "-Dlog4j2.configurationFile=$ROOT/tools/engines/kafka/log4j2.xml" -cp "$LIB/*")
if [[ ! -f $DIR/data/meta.properties ]]; then
  "${java[@]}" kafka.tools.StorageTool format "--cluster-id=$CLUSTER_ID" -c "$DIR/server.properties" >&2 # may start with "-"
fi
exec "${java[@]}" kafka.Kafka "$DIR/server.properties"
