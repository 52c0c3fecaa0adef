{{/* Names: the chart's name, or the release's when it already says it (so the default
install, release "workspace-status-controller", names everything exactly as config/
does). Kubernetes names are at most 63 characters. */}}
{{- define "wsc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wsc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wsc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wsc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wsc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wsc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "wsc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: kaito
{{- end }}

{{/* The namespace of the leader-election Lease (and of the Role that grants it). */}}
{{- define "wsc.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/* The shards this release runs, as a list of indices: [""] when hash sharding is off
(one Deployment, no --shard flags), every shard when only totalShards is set, or the
one shard named by shard. */}}
{{- define "wsc.shards" -}}
{{- $total := int (default 1 .Values.sharding.totalShards) }}
{{- if le $total 1 }}
{{- list "" | toJson }}
{{- else if ne (toString .Values.sharding.shard) "" }}
{{- $shard := int .Values.sharding.shard }}
{{- if or (lt $shard 0) (ge $shard $total) }}
{{- fail (printf "sharding.shard must be 0 to %d (sharding.totalShards - 1), not %d" (sub $total 1) $shard) }}
{{- end }}
{{- list (toString $shard) | toJson }}
{{- else }}
{{- $shards := list }}
{{- range $i := until $total }}
{{- $shards = append $shards (toString $i) }}
{{- end }}
{{- $shards | toJson }}
{{- end }}
{{- end }}
