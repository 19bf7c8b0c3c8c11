{{/* Names and labels. */}}
{{- define "fhirbots.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fhirbots.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "fhirbots.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "fhirbots.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "fhirbots.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "fhirbots.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one role: (dict "root" $ "role" "matcher"). */}}
{{- define "fhirbots.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fhirbots.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "fhirbots.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fhirbots.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fhirbots.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) | quote }}
{{- end }}

{{/* The Secret and key FHIRBOTS_DATABASE_URL is read from. */}}
{{- define "fhirbots.databaseSecret" -}}
{{- default (printf "%s-secrets" (include "fhirbots.fullname" .)) .Values.postgresql.existingSecret }}
{{- end }}
{{- define "fhirbots.databaseSecretKey" -}}
{{- if .Values.postgresql.existingSecret }}{{ .Values.postgresql.existingSecretKey }}{{ else }}database-url{{ end }}
{{- end }}

{{- define "fhirbots.kafkaPasswordSecret" -}}
{{- default (printf "%s-secrets" (include "fhirbots.fullname" .)) .Values.kafka.sasl.existingSecret }}
{{- end }}
{{- define "fhirbots.kafkaPasswordSecretKey" -}}
{{- if .Values.kafka.sasl.existingSecret }}{{ .Values.kafka.sasl.existingSecretKey }}{{ else }}kafka-sasl-password{{ end }}
{{- end }}

{{- define "fhirbots.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* The environment every role gets: (dict "root" $ "extra" .extraEnv). */}}
{{- define "fhirbots.env" -}}
{{- $v := .root.Values -}}
- name: FHIRBOTS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fhirbots.databaseSecret" .root }}
      key: {{ include "fhirbots.databaseSecretKey" .root }}
- name: FHIRBOTS_KAFKA
  value: {{ $v.kafka.bootstrapServers | quote }}
- name: FHIRBOTS_KAFKA_SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- if include "fhirbots.kafkaSasl" .root }}
- name: FHIRBOTS_KAFKA_SASL_MECHANISM
  value: {{ required "kafka.sasl.mechanism is required with a SASL_* securityProtocol" $v.kafka.sasl.mechanism | quote }}
- name: FHIRBOTS_KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with a SASL_* securityProtocol" $v.kafka.sasl.username | quote }}
- name: FHIRBOTS_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fhirbots.kafkaPasswordSecret" .root }}
      key: {{ include "fhirbots.kafkaPasswordSecretKey" .root }}
{{- end }}
{{- if $v.kafka.tls.caSecret }}
- name: FHIRBOTS_KAFKA_SSL_CAFILE
  value: /etc/fhirbots/kafka-ca/{{ $v.kafka.tls.caSecretKey }}
{{- end }}
{{- if $v.kafka.tls.clientSecret }}
- name: FHIRBOTS_KAFKA_SSL_CERTFILE
  value: /etc/fhirbots/kafka-client/{{ $v.kafka.tls.clientCertKey }}
- name: FHIRBOTS_KAFKA_SSL_KEYFILE
  value: /etc/fhirbots/kafka-client/{{ $v.kafka.tls.clientKeyKey }}
{{- end }}
- name: FHIRBOTS_DATA_DIR
  value: /var/lib/fhirbots
- name: FHIRBOTS_HOST
  value: "0.0.0.0"
- name: FHIRBOTS_MANAGEMENT_PORT
  value: {{ $v.config.managementPort | quote }}
- name: FHIRBOTS_LOG_LEVEL
  value: {{ $v.config.logLevel | quote }}
- name: FHIRBOTS_SHUTDOWN_GRACE_SECONDS
  value: {{ $v.config.shutdownGraceSeconds | quote }}
{{- with $v.config.publicUrl }}
- name: FHIRBOTS_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.config.otlpEndpoint }}
- name: FHIRBOTS_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- range $name, $value := mergeOverwrite (dict) $v.config.extraEnv (.extra | default (dict)) }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Volumes every role mounts: (dict "root" $ "botSecrets" bool "apiTls" bool). */}}
{{- define "fhirbots.volumes" -}}
{{- $v := .root.Values -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ $v.tmpSizeLimit }}
- name: data
  emptyDir:
    sizeLimit: {{ $v.dataSizeLimit }}
{{- if $v.postgresql.caSecret }}
- name: postgresql-ca
  secret:
    secretName: {{ $v.postgresql.caSecret }}
{{- end }}
{{- if $v.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $v.kafka.tls.caSecret }}
{{- end }}
{{- if $v.kafka.tls.clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ $v.kafka.tls.clientSecret }}
{{- end }}
{{- if and .botSecrets $v.botSecrets.existingSecret }}
- name: bot-secrets
  secret:
    secretName: {{ $v.botSecrets.existingSecret }}
{{- end }}
{{- if and .apiTls $v.api.tlsSecret }}
- name: api-tls
  secret:
    secretName: {{ $v.api.tlsSecret }}
{{- end }}
{{- end }}

{{- define "fhirbots.volumeMounts" -}}
{{- $v := .root.Values -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/fhirbots
{{- if $v.postgresql.caSecret }}
- name: postgresql-ca
  mountPath: /etc/fhirbots/postgresql-ca
  readOnly: true
{{- end }}
{{- if $v.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/fhirbots/kafka-ca
  readOnly: true
{{- end }}
{{- if $v.kafka.tls.clientSecret }}
- name: kafka-client
  mountPath: /etc/fhirbots/kafka-client
  readOnly: true
{{- end }}
{{- if and .botSecrets $v.botSecrets.existingSecret }}
- name: bot-secrets
  mountPath: /var/lib/fhirbots/secrets
  readOnly: true
{{- end }}
{{- if and .apiTls $v.api.tlsSecret }}
- name: api-tls
  mountPath: /etc/fhirbots/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Startup, liveness and readiness probes on one port: (dict "root" $ "port" "http" "scheme" "HTTP"). */}}
{{- define "fhirbots.probes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  httpGet: {path: /livez, port: {{ .port }}, scheme: {{ .scheme }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /livez, port: {{ .port }}, scheme: {{ .scheme }}}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}, scheme: {{ .scheme }}}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}

{{/* Pod-level settings shared by every role and the migration Job. */}}
{{- define "fhirbots.podCommon" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}
