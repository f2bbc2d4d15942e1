{{/* Names and labels, as `helm create` makes them. */}}
{{- define "sluis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluis.fullname" -}}
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

{{- define "sluis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sluis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sluis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sluis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluis.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "sluis.fullname" .)) .Values.existingPoliciesConfigMap }}
{{- end }}

{{/*
The Sluis config: the operator's `config` plus the keys the chart owns (listeners on every
interface of the pod, the mounted policy directory, the flow store on the data volume or in
PostgreSQL, the admin token from a Secret).
*/}}
{{- define "sluis.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "listeners" (dict
      "grpc" (printf "0.0.0.0:%d" (int .Values.ports.grpc))
      "http" (printf "0.0.0.0:%d" (int .Values.ports.http))
      "admin" (printf "0.0.0.0:%d" (int .Values.ports.admin))) }}
{{- if .Values.tls.secretName }}
{{- $files := dict "certificate" "/etc/sluis/tls/tls.crt" "private_key" "/etc/sluis/tls/tls.key" }}
{{- $tls := merge (dict "reload_interval" .Values.tls.reloadInterval) (deepCopy $files) }}
{{- if .Values.tls.clientCA }}
{{- $mtls := merge (dict "client_ca" "/etc/sluis/tls/ca.crt") (deepCopy $files) }}
{{- $_ := set $tls "grpc" $mtls }}
{{- $_ := set $tls "http" (deepCopy $mtls) }}
{{- end }}
{{- $_ := set $cfg.listeners "tls" $tls }}
{{- end }}
{{- $_ := set $cfg "policies" (list "/etc/sluis/policies") }}
{{- $admin := dict "explain" .Values.admin.explain }}
{{- if .Values.admin.tokenSecret.name }}
{{- $_ := set $admin "token" (dict "env" "SLUIS_ADMIN_TOKEN") }}
{{- end }}
{{- $_ := set $cfg "admin" $admin }}
{{- if eq .Values.store.type "sqlite" }}
{{- $_ := set $cfg "store" (dict "url" (printf "sqlite:/var/lib/sluis/%s" .Values.store.sqlite.file)) }}
{{- else if eq .Values.store.type "postgres" }}
{{- $store := dict "url" (required "store.postgres.url is required with store.type postgres" .Values.store.postgres.url) "max_connections" (int .Values.store.postgres.maxConnections) }}
{{- if .Values.store.postgres.passwordSecret.name }}
{{- $_ := set $store "password" (dict "env" "SLUIS_DB_PASSWORD") }}
{{- end }}
{{- $_ := set $cfg "store" $store }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* The container's env: the Secrets the config refers to, then extraEnv. */}}
{{- define "sluis.env" -}}
{{- if .Values.admin.tokenSecret.name }}
- name: SLUIS_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.admin.tokenSecret.name }}
      key: {{ .Values.admin.tokenSecret.key }}
{{- end }}
{{- if and (eq .Values.store.type "postgres") .Values.store.postgres.passwordSecret.name }}
- name: SLUIS_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.postgres.passwordSecret.name }}
      key: {{ .Values.store.postgres.passwordSecret.key }}
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- with .Values.extraEnv }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}
