{{/* Names, labels and shared pod settings. */}}

{{/* The prefix of every object's name, so that releases never share a name. At most 40
     characters, so that the longest derived names fit Kubernetes' limits: a Job's name (a label
     value of its pods) `<fullname>-locust-worker-<hash>` in 63, a Service's
     `<fullname>-ingest-headless` in 63, a StatefulSet's `<fullname>-mongodb` in 52. */}}
{{- define "wt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The Strimzi Kafka cluster's name: kafka.strimzi.clusterName, or the release's full name. */}}
{{- define "wt.kafkaCluster" -}}
{{- .Values.kafka.strimzi.clusterName | default (include "wt.fullname" .) -}}
{{- end -}}

{{- define "wt.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "wt.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "wt.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* HTTP port of each service: API, probes and /metrics. */}}
{{- define "wt.httpPort" -}}
{{- get (dict "gateway" 8080 "ingest" 8002 "archiver" 8001 "counter" 8000) . -}}
{{- end -}}

{{/* Kafka's bootstrap address: the bundled cluster's TLS listener, or kafka.bootstrapServers. */}}
{{- define "wt.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{ include "wt.kafkaCluster" . }}-kafka-bootstrap.{{ .Release.Namespace }}.svc:9093
{{- else -}}
{{ required "kafka.bootstrapServers is required when kafka.strimzi.enabled is false" .Values.kafka.bootstrapServers }}
{{- end -}}
{{- end -}}

{{- define "wt.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "wt.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* --- Credentials (docs/deploy-kubernetes.md, "Security and durability") ---------------------- */}}

{{/* One password, key or token, the same everywhere in one render: the value given; else derived
     from secretSeed (so every `helm template` with the same seed renders the same one); else the
     installed release's, read back from the Secret that holds it (Helm's lookup; empty when
     nothing is installed or under `helm template`); else a new random one.
     (dict "root" $ "name" "redis-gateway" "value" "" "secret" "<home Secret>" "key" "<its key>") */}}
{{- define "wt.credential" -}}
{{- if not (hasKey .root.Values "_credentials") -}}
{{- $_ := set .root.Values "_credentials" dict -}}
{{- end -}}
{{- $cache := .root.Values._credentials -}}
{{- if not (hasKey $cache .name) -}}
{{- if .value -}}
{{- $_ := set $cache .name .value -}}
{{- else if .root.Values.secretSeed -}}
{{- $material := printf "%s\n%s\n%s\n%s" .root.Values.secretSeed .root.Release.Namespace .root.Release.Name .name -}}
{{- $_ := set $cache .name ($material | sha256sum | trunc 40) -}}
{{- else -}}
{{- $installed := (lookup "v1" "Secret" .root.Release.Namespace .secret).data | default dict -}}
{{- if hasKey $installed .key -}}
{{- $_ := set $cache .name (index $installed .key | b64dec) -}}
{{- else -}}
{{- $_ := set $cache .name (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- index $cache .name -}}
{{- end -}}

{{/* Which engines each of our services talks to, so which credentials it gets. */}}
{{- define "wt.engines" -}}
{{- get (dict "gateway" "mongodb redis" "ingest" "kafka" "archiver" "kafka mongodb" "counter" "kafka redis") . -}}
{{- end -}}

{{/* The engine's existingSecret, or "". */}}
{{- define "wt.existingSecret" -}}
{{- if eq .engine "kafka" -}}
{{- .root.Values.kafka.strimzi.auth.existingSecret -}}
{{- else -}}
{{- (index .root.Values .engine).auth.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The password of one user of a bundled engine: (dict "root" $ "engine" "redis" "user" "gateway").
     Its home: the engine's Secret for MongoDB and Redis (the server needs them all), the
     service's own Secret for Kafka (Strimzi's User Operator reads it from there). */}}
{{- define "wt.password" -}}
{{- $fullname := include "wt.fullname" .root -}}
{{- if eq .engine "kafka" -}}
{{- $value := get .root.Values.kafka.strimzi.auth (printf "%sPassword" .user) -}}
{{- include "wt.credential" (dict "root" .root "name" (printf "kafka-%s" .user) "value" $value "secret" (printf "%s-%s-credentials" $fullname .user) "key" "kafka-password") -}}
{{- else -}}
{{- $value := get (index .root.Values .engine).auth (printf "%sPassword" .user) -}}
{{- include "wt.credential" (dict "root" .root "name" (printf "%s-%s" .engine .user) "value" $value "secret" (printf "%s-%s" $fullname .engine) "key" (printf "%s-password" .user)) -}}
{{- end -}}
{{- end -}}

{{/* Where a pod reads one user's password: (dict "root" $ "engine" "redis" "user" "gateway"
     "server" true|false). The existingSecret's `<user>-password` if there is one; else a
     service's own Secret (`<engine>-password`), or the engine server's Secret. */}}
{{- define "wt.passwordRef" -}}
{{- $fullname := include "wt.fullname" .root -}}
{{- $existing := include "wt.existingSecret" . -}}
{{- if $existing -}}
name: {{ $existing }}
key: {{ .user }}-password
{{- else if .server -}}
name: {{ $fullname }}-{{ .engine }}
key: {{ .user }}-password
{{- else -}}
name: {{ $fullname }}-{{ .user }}-credentials
key: {{ .engine }}-password
{{- end -}}
{{- end -}}

{{/* A checksum of the passwords an engine's pod reads, so that the pod restarts when one changes
     (an existingSecret's change needs `kubectl rollout restart`, see the docs):
     (dict "root" $ "engine" "redis" "users" (list "admin" ...)) */}}
{{- define "wt.engineChecksum" -}}
{{- $root := .root -}}
{{- $engine := .engine -}}
{{- $passwords := list (include "wt.existingSecret" .) -}}
{{- if not (include "wt.existingSecret" .) -}}
{{- range $user := .users -}}
{{- $passwords = append $passwords (include "wt.password" (dict "root" $root "engine" $engine "user" $user)) -}}
{{- end -}}
{{- end -}}
{{- toJson $passwords | sha256sum -}}
{{- end -}}

{{/* The stringData of a service's own Secret (YAML, possibly empty): only the credentials of the
     engines it talks to, and only those the chart holds (not an existingSecret's). */}}
{{- define "wt.serviceCredentials" -}}
{{- $root := .root -}}
{{- $data := dict -}}
{{- range $engine := splitList " " (include "wt.engines" .component) -}}
{{- $bundled := get (dict "kafka" $root.Values.kafka.strimzi.enabled "mongodb" $root.Values.mongodb.enabled "redis" $root.Values.redis.enabled) $engine -}}
{{- if and $bundled (not (include "wt.existingSecret" (dict "root" $root "engine" $engine))) -}}
{{- $_ := set $data (printf "%s-password" $engine) (include "wt.password" (dict "root" $root "engine" $engine "user" $.component)) -}}
{{- else if and (not $bundled) (eq $engine "mongodb") -}}
{{- $_ := set $data "mongodb-url" (required "mongodb.externalUrl is required when mongodb.enabled is false" $root.Values.mongodb.externalUrl) -}}
{{- else if and (not $bundled) (eq $engine "redis") -}}
{{- $_ := set $data "redis-url" (required "redis.externalUrl is required when redis.enabled is false" $root.Values.redis.externalUrl) -}}
{{- end -}}
{{- end -}}
{{- if $data -}}
{{- toYaml $data -}}
{{- end -}}
{{- end -}}

{{/* The API keys Secret's name ("" when writes are anonymous), and the internal token's. */}}
{{- define "wt.apiKeysSecret" -}}
{{- if not .Values.auth.allowAnonymous -}}
{{- .Values.auth.existingSecret | default (printf "%s-api-keys" (include "wt.fullname" .)) -}}
{{- end -}}
{{- end -}}

{{- define "wt.internalTokenSecret" -}}
{{- .Values.auth.internalToken.existingSecret | default (printf "%s-internal-token" (include "wt.fullname" .)) -}}
{{- end -}}

{{/* The internal token the chart holds. */}}
{{- define "wt.internalToken" -}}
{{- $secret := printf "%s-internal-token" (include "wt.fullname" .) -}}
{{- include "wt.credential" (dict "root" . "name" "internal-token" "value" .Values.auth.internalToken.value "secret" $secret "key" "token") -}}
{{- end -}}

{{/* The write keys the chart holds: (list of keys), the generated one when none is given. */}}
{{- define "wt.apiKeys" -}}
{{- if .Values.auth.apiKeys -}}
{{- toJson .Values.auth.apiKeys -}}
{{- else -}}
{{- $key := include "wt.credential" (dict "root" . "name" "api-key" "value" "" "secret" (printf "%s-api-keys" (include "wt.fullname" .)) "key" "api-key") -}}
{{- toJson (list $key) -}}
{{- end -}}
{{- end -}}

{{/* A Strimzi KafkaUser's name, which is also the SCRAM user name: (dict "root" $ "component" "ingest") */}}
{{- define "wt.kafkaUser" -}}
{{- include "wt.fullname" .root }}-{{ .component -}}
{{- end -}}

{{/* The MongoDB database of the archive (the URL's path; the users' roles are on it alone). */}}
{{- define "wt.mongoDatabase" -}}weathertweets{{- end -}}

{{/* A Redis ACL key pattern for the keys under our prefix (all keys when the prefix is empty). */}}
{{- define "wt.redisKeys" -}}
{{- printf "~%s*" .Values.pipeline.counterPrefix -}}
{{- end -}}

{{/* A NetworkPolicy peer: the pods of one component of this release. */}}
{{- define "wt.peer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .root.Release.Name }}
    app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A Kubernetes quantity ("100m", "1.5", "128Mi", 2) as a plain number, or "" for a form this
     does not read (exponents, "u", "n"): only for comparing two quantities. */}}
{{- define "wt.quantity" -}}
{{- $text := toString . -}}
{{- $number := regexFind "^[0-9]*[.]?[0-9]*" $text -}}
{{- $scale := get (dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0) (trimPrefix $number $text) -}}
{{- if and $number (ne (toString $scale) "") -}}
{{- mulf (float64 $number) $scale -}}
{{- end -}}
{{- end -}}

{{/* Fails unless each request is at most its limit, as the API server requires:
     (dict "name" "gateway.resources" "resources" .Values.gateway.resources) */}}
{{- define "wt.checkResources" -}}
{{- range $resource := list "cpu" "memory" -}}
{{- $request := index $.resources.requests $resource -}}
{{- $limit := index $.resources.limits $resource -}}
{{- $r := include "wt.quantity" $request -}}
{{- $l := include "wt.quantity" $limit -}}
{{- if and $r $l (gt (float64 $r) (float64 $l)) -}}
{{- fail (printf "%s: requests.%s (%v) is above limits.%s (%v); Kubernetes refuses a request above its limit" $.name $resource $request $resource $limit) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Fails when an upgrade would change a StatefulSet's volume claim (its size or storage class),
     which Kubernetes forbids, before anything is changed:
     (dict "root" $ "name" "<statefulset>" "key" "mongodb" "storage" .Values.mongodb.storage) */}}
{{- define "wt.checkStorageUnchanged" -}}
{{- $existing := lookup "apps/v1" "StatefulSet" .root.Release.Namespace .name -}}
{{- if $existing -}}
{{- $claim := (index $existing.spec.volumeClaimTemplates 0).spec -}}
{{- $size := $claim.resources.requests.storage -}}
{{- $class := $claim.storageClassName | default "" -}}
{{- $sizeChanged := ne (include "wt.quantity" $size) (include "wt.quantity" .storage.size) -}}
{{- if or $sizeChanged (ne $class (.storage.storageClassName | default "")) -}}
{{- fail (printf "%s.storage (size %s, class %q) cannot change to (size %s, class %q) on an installed release: a StatefulSet's volume claims are immutable. See \"Changing storage\" in docs/deploy-kubernetes.md" .key $size $class .storage.size (.storage.storageClassName | default "")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
