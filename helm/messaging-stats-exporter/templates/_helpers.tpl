{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "messaging-stats-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, with the chart name appended
unless the release name already contains it.
*/}}
{{- define "messaging-stats-exporter.fullname" -}}
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

{{/* Namespace of the release's resources. */}}
{{- define "messaging-stats-exporter.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "messaging-stats-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries. */}}
{{- define "messaging-stats-exporter.labels" -}}
helm.sh/chart: {{ include "messaging-stats-exporter.chart" . }}
{{ include "messaging-stats-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: messaging-stats-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels the Service and the Deployment select the pod by. */}}
{{- define "messaging-stats-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "messaging-stats-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the `helm test` pod: the release's labels, but a name of its own, so
that neither the Service nor the NetworkPolicy takes it for an exporter pod.
*/}}
{{- define "messaging-stats-exporter.testLabels" -}}
helm.sh/chart: {{ include "messaging-stats-exporter.chart" . }}
{{ include "messaging-stats-exporter.testSelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: messaging-stats-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "messaging-stats-exporter.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "messaging-stats-exporter.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the ServiceAccount the pod runs as. */}}
{{- define "messaging-stats-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "messaging-stats-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: registry/repository, then @digest or :tag. */}}
{{- define "messaging-stats-exporter.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* The exporter config file's contents: a string verbatim, a map as YAML
(with the glob of the target files' directory added to its target_files). */}}
{{- define "messaging-stats-exporter.configYaml" -}}
{{- if kindIs "string" .Values.config }}
{{- .Values.config }}
{{- else }}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- if include "messaging-stats-exporter.hasTargetFiles" . }}
{{- $glob := printf "%s/*/*.yaml" (trimSuffix "/" .Values.targetFiles.mountPath) }}
{{- $globs := $config.target_files | default list }}
{{- if not (has $glob $globs) }}
{{- $_ := set $config "target_files" (append $globs $glob) }}
{{- end }}
{{- end }}
{{- toYaml $config }}
{{- end }}
{{- end }}

{{/* "true" when targetFiles names a ConfigMap or a Secret. */}}
{{- define "messaging-stats-exporter.hasTargetFiles" -}}
{{- $files := .Values.targetFiles | default dict }}
{{- if or $files.configMaps $files.secrets }}true{{ end }}
{{- end }}

{{/* Whether the chart makes a Secret of its own from .Values.secrets. */}}
{{- define "messaging-stats-exporter.hasOwnSecret" -}}
{{- if .Values.secrets }}true{{ end }}
{{- end }}

{{/*
Number of shards: sharding.replicas, 1 when unset. Fails on a count below 1,
and on settings that contradict sharding (see the chart README, "Running at
scale").
*/}}
{{- define "messaging-stats-exporter.shardCount" -}}
{{- $sharding := .Values.sharding | default dict }}
{{- $replicas := 1 }}
{{- if hasKey $sharding "replicas" }}
{{- $raw := toString $sharding.replicas }}
{{- if or (not (regexMatch "^[0-9]+$" $raw)) (lt (int $raw) 1) }}
{{- fail (printf "sharding.replicas: %s is not a whole number of shards, 1 or more (1 runs the unsharded Deployment)" $raw) }}
{{- end }}
{{- $replicas = int $raw }}
{{- end }}
{{- if gt $replicas 1 }}
{{- if ne (int .Values.replicaCount) 1 }}
{{- fail (printf "replicaCount: %v with sharding.replicas: %d; a sharded release sizes its StatefulSet with sharding.replicas, leave replicaCount at 1" .Values.replicaCount $replicas) }}
{{- end }}
{{- range .Values.extraArgs }}
{{- if hasPrefix "--shard" (toString .) }}
{{- fail (printf "extraArgs: %s with sharding.replicas: %d; the chart passes --shard-from-hostname --shard-count %d itself" (toString .) $replicas $replicas) }}
{{- end }}
{{- end }}
{{- $name := include "messaging-stats-exporter.fullname" . }}
{{- if gt (len $name) 52 }}
{{- fail (printf "sharding: the StatefulSet name %s is %d characters; a StatefulSet name may have at most 52 (its pods carry a controller-revision-hash label of the name and a hash), so set a shorter fullnameOverride or nameOverride" $name (len $name)) }}
{{- end }}
{{- end }}
{{- $replicas }}
{{- end }}

{{/* "true" when the release is sharded (sharding.replicas > 1): a StatefulSet instead of the Deployment. */}}
{{- define "messaging-stats-exporter.sharded" -}}
{{- if gt (int (include "messaging-stats-exporter.shardCount" .)) 1 }}true{{ end }}
{{- end }}

{{/* The headless Service that governs the StatefulSet (stable pod DNS names). */}}
{{- define "messaging-stats-exporter.headlessServiceName" -}}
{{- printf "%s-headless" (include "messaging-stats-exporter.fullname" .) }}
{{- end }}

{{/*
A label only the headless Service carries, so that the ServiceMonitor, which
selects the chart's Services by the selector labels, scrapes each pod once
(through the regular Service) and not a second time through the headless one.
*/}}
{{- define "messaging-stats-exporter.headlessLabelKey" -}}
messaging-stats-exporter/service
{{- end }}
