#!/usr/bin/env bash
# Kafka's command-line tools against the broker of `make services`, without a Kafka install:
#   tools/engines/kafka-tool.sh consumer-groups --describe --all-groups
#   tools/engines/kafka-tool.sh topics --describe --topic messages
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/tools/engines/kafka/pom.xml")
LIB=$ROOT/.cache/engines/kafka-$VERSION
[[ -d $LIB ]] || { echo "kafka-tool: run 'make services' first" >&2; exit 1; }
case ${1:-} in
consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
topics) class=org.apache.kafka.tools.TopicCommand ;;
*) echo "usage: $0 consumer-groups|topics [options]" >&2; exit 2 ;;
esac
shift
exec java -Dlog4j2.configurationFile="$ROOT/tools/engines/kafka/log4j2.xml" -cp "$LIB/*" "$class" \
  --bootstrap-server "127.0.0.1:${WT_KAFKA_PORT:-19092}" "$@"
