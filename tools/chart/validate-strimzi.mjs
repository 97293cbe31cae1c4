// Validate Strimzi custom resources (a JSON array on stdin) with the validators that
// @kubernetes-models generates from Strimzi's own CRD schemas (types, enums, required fields).
// Prints one line per resource; exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { Kafka } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1/Kafka";
import { KafkaNodePool } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1/KafkaNodePool";
import { KafkaTopic } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1/KafkaTopic";
import { KafkaUser } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1/KafkaUser";

const models = { Kafka, KafkaNodePool, KafkaTopic, KafkaUser };
const resources = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const resource of resources) {
  const name = `${resource.kind}/${resource.metadata?.name}`;
  const Model = models[resource.kind];
  if (resource.apiVersion !== "kafka.strimzi.io/v1" || !Model) {
    console.log(`FAIL ${name}: not a kafka.strimzi.io/v1 Kafka, KafkaNodePool, KafkaTopic or KafkaUser`);
    failed++;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`ok   ${name}`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
