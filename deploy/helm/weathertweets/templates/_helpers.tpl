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

{{- define "wt.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{ include "wt.kafkaCluster" . }}-kafka-bootstrap.{{ .Release.Namespace }}.svc:9092
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

{{/* Existing value on upgrade, the user's value, or a new random one, the same everywhere in
     one render: (dict "root" $ "key" "redis-password" "value" "...") */}}
{{- define "wt.secretValue" -}}
{{- if not (hasKey .root.Values "_generatedSecrets") -}}
{{- $_ := set .root.Values "_generatedSecrets" dict -}}
{{- end -}}
{{- $cache := .root.Values._generatedSecrets -}}
{{- if not (hasKey $cache .key) -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (printf "%s-secrets" (include "wt.fullname" .root)) -}}
{{- if .value -}}
{{- $_ := set $cache .key .value -}}
{{- else if and $existing (hasKey $existing.data .key) -}}
{{- $_ := set $cache .key (index $existing.data .key | b64dec) -}}
{{- else -}}
{{- $_ := set $cache .key (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- index $cache .key -}}
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
