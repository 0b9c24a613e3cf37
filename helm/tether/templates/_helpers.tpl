{{/*
Names. The release's objects are called <fullname>-<component>; fullname is truncated so that the longest
suffix ("-api-box-headless", 17 characters) still fits the 63-character DNS label limit.
*/}}
{{- define "tether.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 46 | trimSuffix "-" -}}
{{- end -}}

{{- define "tether.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tether.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names, one per component; the tests and NOTES.txt use the same helpers. */}}
{{- define "tether.router.name" -}}{{ include "tether.fullname" . }}-router{{- end -}}
{{- define "tether.apiBox.name" -}}{{ include "tether.fullname" . }}-api-box{{- end -}}
{{- define "tether.apiBox.headless" -}}{{ include "tether.fullname" . }}-api-box-headless{{- end -}}
{{- define "tether.worker.name" -}}{{ include "tether.fullname" . }}-worker{{- end -}}
{{- define "tether.worker.headless" -}}{{ include "tether.fullname" . }}-worker-headless{{- end -}}
{{- define "tether.redis.name" -}}{{ include "tether.fullname" . }}-redis{{- end -}}
{{- define "tether.apiKeys.secretName" -}}
{{- default (printf "%s-api-keys" (include "tether.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{/* The Secret holding the key every api box seals compaction items under (docs/protocol.md). */}}
{{- define "tether.compactionKey.secretName" -}}
{{- default (printf "%s-compaction-key" (include "tether.fullname" .)) .Values.apiBox.compactionKey.existingSecret -}}
{{- end -}}

{{/* Labels: Kubernetes recommended labels plus the component. Call with (dict "ctx" $ "component" "router"). */}}
{{- define "tether.labels" -}}
helm.sh/chart: {{ include "tether.chart" .ctx }}
{{ include "tether.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: tether
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tether.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tether.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "tether.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Redis URL the API boxes write behind to: the bundled StatefulSet, or externalRedis.url. */}}
{{- define "tether.redis.url" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s:%d/0" (include "tether.redis.name" .) (int .Values.redis.port) -}}
{{- else -}}
{{- .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds of an API box: the kubelet's clock starts before preStop, so the grace period
must cover the preStop sleep, the drain budget (in-flight responses finish, write-behind flushes) and slack.
*/}}
{{- define "tether.apiBox.terminationGracePeriodSeconds" -}}
{{- $b := .Values.apiBox -}}
{{- $needed := add $b.preStopSleepSeconds $b.drain.budgetSeconds $b.drain.flushSeconds -}}
{{- if $b.terminationGracePeriodSeconds -}}
{{- if lt (int $b.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "apiBox.terminationGracePeriodSeconds (%d) must cover preStopSleepSeconds + drain.budgetSeconds + drain.flushSeconds (%d)" (int $b.terminationGracePeriodSeconds) (int $needed)) -}}
{{- end -}}
{{- $b.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add $needed $b.drain.slackSeconds -}}
{{- end -}}
{{- end -}}

{{/* Shared pod scaffolding: pull secrets, service account token, security contexts, scheduling. */}}
{{- define "tether.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "tether.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end -}}

{{- define "tether.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* nodeSelector, tolerations, affinity, topologySpreadConstraints, priorityClassName of one component. */}}
{{- define "tether.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
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
{{- end -}}

{{/* Capabilities: monitoring and KEDA objects render only where their CRDs are installed. */}}
{{- define "tether.hasServiceMonitor" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" -}}true{{- end -}}
{{- end -}}
{{- define "tether.hasPodMonitor" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor" -}}true{{- end -}}
{{- end -}}
{{- define "tether.hasPrometheusRule" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule" -}}true{{- end -}}
{{- end -}}
{{- define "tether.hasScaledObject" -}}
{{- if .Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject" -}}true{{- end -}}
{{- end -}}

{{- define "tether.router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tether.router.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tether.clusterDomainSuffix" -}}
{{- printf "%s.svc.%s" .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* The api boxes' worker list: every worker pod's stable DNS name, host:port, comma-separated. */}}
{{- define "tether.apiBox.workersArg" -}}
{{- $targets := list -}}
{{- range $i := until (int .Values.worker.replicas) -}}
{{- $targets = append $targets (printf "%s-%d.%s.%s:%d" (include "tether.worker.name" $) $i (include "tether.worker.headless" $) (include "tether.clusterDomainSuffix" $) (int $.Values.worker.port)) -}}
{{- end -}}
{{- join "," $targets -}}
{{- end -}}

{{/* TETHER_BOX_REDIS_URL from the bundled Redis, externalRedis.url or externalRedis.existingSecret. */}}
{{- define "tether.apiBox.redisEnv" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
- name: TETHER_BOX_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else if include "tether.redis.url" . -}}
- name: TETHER_BOX_REDIS_URL
  value: {{ include "tether.redis.url" . | quote }}
{{- end -}}
{{- end -}}

{{/* The api boxes' keys file (api_box/core/auth.py): one "<tenant> <key>" line per entry. */}}
{{- define "tether.apiKeys.file" -}}
{{- range .Values.apiKeys.keys }}{{ .tenant }} {{ .key }}
{{ end -}}
{{- end -}}

{{/* The ScaledObject renders (and owns the replica count) only where KEDA's API is served. */}}
{{- define "tether.apiBox.kedaActive" -}}
{{- if and .Values.apiBox.keda.enabled (include "tether.hasScaledObject" .) -}}true{{- end -}}
{{- end -}}

{{/* interval, scrapeTimeout, honorLabels, relabelings of a ServiceMonitor/PodMonitor endpoint. */}}
{{- define "tether.scrapeSettings" -}}
interval: {{ .interval }}
scrapeTimeout: {{ .scrapeTimeout }}
honorLabels: {{ .honorLabels }}
{{- with .relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Ingress rule for a metrics/admin port: from networkPolicy.metricsFrom, or from anywhere when empty. */}}
{{- define "tether.networkPolicy.metricsIngress" -}}
- ports: [{port: {{ .port }}, protocol: TCP}]
  {{- with .ctx.Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
