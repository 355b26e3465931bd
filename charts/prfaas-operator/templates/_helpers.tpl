{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "prfaas-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: the release name when it already contains the chart name (so release
`prfaas-operator` gives `prfaas-operator`, not `prfaas-operator-prfaas-operator`).
*/}}
{{- define "prfaas-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "prfaas-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "prfaas-operator.labels" -}}
helm.sh/chart: {{ include "prfaas-operator.chart" . }}
app.kubernetes.io/name: {{ include "prfaas-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prfaas
{{- end }}

{{/* Selector of the operator's pods (stable across upgrades). */}}
{{- define "prfaas-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prfaas-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "prfaas-operator.routerName" -}}
{{- printf "%s-router" (include "prfaas-operator.fullname" .) }}
{{- end }}

{{- define "prfaas-operator.routerNamespace" -}}
{{- default .Release.Namespace .Values.router.namespace }}
{{- end }}

{{- define "prfaas-operator.routerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "prfaas-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end }}

{{- define "prfaas-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Pod and container security from values (default: non-root 65532, read-only root, no
privilege, RuntimeDefault seccomp). */}}
{{- define "prfaas-operator.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "prfaas-operator.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Scheduling knobs of a pod spec. Call with the component's values (.Values.operator, …). */}}
{{- define "prfaas-operator.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The router's arguments (the `prfaas router` contract). Call with (dict "ctx" $ "host" "0.0.0.0").
*/}}
{{- define "prfaas-operator.routerArgs" -}}
- router
- --pdcluster
- {{ .ctx.Values.router.pdCluster | quote }}
- --namespace
- {{ include "prfaas-operator.routerNamespace" .ctx | quote }}
- --host
- {{ .host | quote }}
- --port
- {{ .ctx.Values.router.port | quote }}
- --model
- {{ .ctx.Values.router.model | quote }}
{{- with .ctx.Values.router.limits }}
- --max-tokens-limit
- {{ .maxTokens | quote }}
- --max-prompt-tokens
- {{ .maxPromptTokens | quote }}
- --max-concurrency
- {{ .maxConcurrency | quote }}
- --max-json-depth
- {{ .maxJsonDepth | quote }}
- --idle-timeout
- {{ .idleTimeoutSeconds | quote }}
- --body-timeout
- {{ .bodyTimeoutSeconds | quote }}
{{- end }}
{{- range .ctx.Values.router.allowEndpoints }}
- --allow-endpoint
- {{ . | quote }}
{{- end }}
{{- with .ctx.Values.router.apiKeys.secret }}
- --api-key-file
- /etc/prfaas/api-keys/{{ $.ctx.Values.router.apiKeys.key }}
{{- end }}
{{- if .ctx.Values.router.adminPort }}
- --admin-port
- {{ .ctx.Values.router.adminPort | quote }}
{{- end }}
{{- if gt (int .ctx.Values.router.workers) 1 }}
- --workers
- {{ .ctx.Values.router.workers | quote }}
{{- end }}
{{- end }}

{{/* scaleTargets grouped by apiGroup, as YAML {group: [resource/scale, ...]} (sorted, unique). */}}
{{- define "prfaas-operator.scaleTargetsByGroup" -}}
{{- $out := dict }}
{{- range .Values.scaleTargets }}
{{- $have := get $out .apiGroup | default list }}
{{- $_ := set $out .apiGroup (append $have (printf "%s/scale" .resource) | uniq | sortAlpha) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* memberSecrets grouped by namespace, as YAML {namespace: [name, ...]} (sorted, unique). */}}
{{- define "prfaas-operator.memberSecretsByNamespace" -}}
{{- $out := dict }}
{{- range .Values.memberSecrets }}
{{- $have := get $out .namespace | default list }}
{{- $_ := set $out .namespace (append $have .name | uniq | sortAlpha) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* ServiceMonitor endpoint options shared by the operator's and the router's. */}}
{{- define "prfaas-operator.scrapeOptions" -}}
honorLabels: {{ .Values.serviceMonitor.honorLabels }}
{{- with .Values.serviceMonitor.relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceMonitor.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Whether the operator runs with kopf peering (several replicas, or asked for). */}}
{{- define "prfaas-operator.peering" -}}
{{- if or .Values.operator.peering.enabled (gt (int .Values.operator.replicas) 1) }}true{{ end }}
{{- end }}
