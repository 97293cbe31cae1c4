{{/* Names, labels and shared pod settings. */}}

{{- define "wt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
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
{{ .Values.kafka.strimzi.clusterName }}-kafka-bootstrap.{{ .Release.Namespace }}.svc:9092
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
