{{/*
Names, labels, and the pieces every netmeter container shares: the image, the Kafka and
ClickHouse settings (environment variables; credentials only through secretKeyRef), the
mounts of the Kafka CA and client certificate, and the security context of the deployments.
Convention (also in docker-compose.yml): where a service connects and with which credentials
(Kafka, ClickHouse, logging, the node name) are NETMETER_* variables; what a service does is
flags in `args`.
*/}}

{{- define "netmeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "netmeter.fullname" -}}
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

{{/* The name of a component's objects: (dict "root" $ "component" "collector"). */}}
{{- define "netmeter.componentName" -}}
{{- printf "%s-%s" (include "netmeter.fullname" .root | trunc 52 | trimSuffix "-") .component }}
{{- end }}

{{- define "netmeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "netmeter.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "netmeter.labels" -}}
{{ include "netmeter.selectorLabels" . }}
app.kubernetes.io/part-of: netmeter
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "netmeter.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "netmeter.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The attributor's ServiceAccount. */}}
{{- define "netmeter.attributorServiceAccount" -}}
{{- if .Values.attributor.serviceAccount.create }}
{{- default (include "netmeter.componentName" (dict "root" . "component" "attributor")) .Values.attributor.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.attributor.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* True when the Prometheus operator's CRDs are known (live cluster or --api-versions). */}}
{{- define "netmeter.hasCrd" -}}
{{- if or (.root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind)) (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}

{{- define "netmeter.podMonitorRendered" -}}
{{- if and .Values.metrics.podMonitor.enabled (include "netmeter.hasCrd" (dict "root" . "kind" "PodMonitor")) }}true{{ end }}
{{- end }}

{{/* Pod annotations: prometheus.io/* when no PodMonitor scrapes the pods, plus the user's. */}}
{{- define "netmeter.podAnnotations" -}}
{{- if not (include "netmeter.podMonitorRendered" .root) }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .annotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Refuses settings the binaries would refuse at start, with the value to fix, so a bad install
fails at `helm install` instead of in a crash loop.
*/}}
{{- define "netmeter.validate" -}}
{{- $kafka := .Values.kafka }}
{{- $sasl := has $kafka.securityProtocol (list "sasl_plaintext" "sasl_ssl") }}
{{- $tls := has $kafka.securityProtocol (list "ssl" "sasl_ssl") }}
{{- if and $sasl (not $kafka.sasl.mechanism) }}
{{- fail (printf "kafka.sasl.mechanism is required with kafka.securityProtocol=%s (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" $kafka.securityProtocol) }}
{{- end }}
{{- if and $sasl (not $kafka.sasl.existingSecret) }}
{{- fail (printf "kafka.sasl.existingSecret is required with kafka.securityProtocol=%s: create a Secret with the keys %s and %s" $kafka.securityProtocol $kafka.sasl.usernameKey $kafka.sasl.passwordKey) }}
{{- end }}
{{- if and (not $sasl) (or $kafka.sasl.mechanism $kafka.sasl.existingSecret) }}
{{- fail (printf "kafka.sasl is set but kafka.securityProtocol=%s: use sasl_ssl or sasl_plaintext" $kafka.securityProtocol) }}
{{- end }}
{{- if and $kafka.tls.ca.existingSecret $kafka.tls.ca.existingConfigMap }}
{{- fail "kafka.tls.ca: set existingSecret or existingConfigMap, not both" }}
{{- end }}
{{- if and (not $tls) (or $kafka.tls.ca.existingSecret $kafka.tls.ca.existingConfigMap $kafka.tls.clientCertificate.existingSecret) }}
{{- fail (printf "kafka.tls is set but kafka.securityProtocol=%s: use ssl or sasl_ssl" $kafka.securityProtocol) }}
{{- end }}
{{- range $key, $value := $kafka.options }}
{{- if contains "," (toString $value) }}
{{- fail (printf "kafka.options.%s: a value must not contain commas (NETMETER_KAFKA_OPTIONS is comma-separated)" $key) }}
{{- end }}
{{- end }}
{{- range $component := list "collector" "attributor" "sink" }}
{{- $values := index $.Values $component }}
{{- if le (int $values.terminationGracePeriodSeconds) (int $values.shutdownTimeoutSeconds) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be above %s.shutdownTimeoutSeconds (%d), or the kubelet kills the %s before it drained" $component (int $values.terminationGracePeriodSeconds) $component (int $values.shutdownTimeoutSeconds) $component) }}
{{- end }}
{{- end }}
{{- range $key, $value := .Values.kafkaEngine.settings }}
{{- if contains "," (toString $value) }}
{{- fail (printf "kafkaEngine.settings.%s: a value must not contain commas" $key) }}
{{- end }}
{{- end }}
{{- if hasKey .Values.clickhouse.retention "flowsDays" }}
{{- fail "clickhouse.retention.flowsDays is gone: since schema version 6, flows keeps records for clickhouse.retention.recordDays (default 7) and connection_minutes keeps the per-connection detail for clickhouse.retention.detailDays (default 90); set those instead" }}
{{- end }}
{{- $cluster := .Values.clickhouse.cluster }}
{{- if and $cluster.name (eq $cluster.replication "none") (not $cluster.nodes) }}
{{- fail "clickhouse.cluster.nodes is required with clickhouse.cluster.replication=none: the HTTP URL of every node, where the schema is created" }}
{{- end }}
{{- if and $cluster.nodes (or (not $cluster.name) (eq $cluster.replication "keeper")) }}
{{- fail "clickhouse.cluster.nodes is only for clickhouse.cluster.replication=none (with keeper the schema is created ON CLUSTER through clickhouse.url)" }}
{{- end }}
{{- if and .Values.sink.enabled .Values.kafkaEngine.enabled }}
{{- fail "sink.enabled and kafkaEngine.enabled: choose one way into ClickHouse (the sink, or ClickHouse's Kafka engine with sink.enabled=false)" }}
{{- end }}
{{- end }}

{{/* Logging and Kafka settings, identical in every container that talks to Kafka. */}}
{{- define "netmeter.kafkaEnv" -}}
{{- $kafka := .Values.kafka }}
- name: NETMETER_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: NETMETER_LOG
  value: {{ .Values.logging.level | quote }}
- name: NETMETER_KAFKA_BROKERS
  value: {{ $kafka.brokers | quote }}
- name: NETMETER_KAFKA_TOPIC_PREFIX
  value: {{ $kafka.topicPrefix | quote }}
- name: NETMETER_KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
{{- if $kafka.sasl.existingSecret }}
- name: NETMETER_KAFKA_SASL_MECHANISM
  value: {{ $kafka.sasl.mechanism | quote }}
- name: NETMETER_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.usernameKey }}
- name: NETMETER_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.passwordKey }}
{{- end }}
{{- if or $kafka.tls.ca.existingSecret $kafka.tls.ca.existingConfigMap }}
- name: NETMETER_KAFKA_SSL_CA_LOCATION
  value: {{ printf "/etc/netmeter/kafka-ca/%s" $kafka.tls.ca.key | quote }}
{{- end }}
{{- if $kafka.tls.clientCertificate.existingSecret }}
- name: NETMETER_KAFKA_SSL_CERTIFICATE_LOCATION
  value: /etc/netmeter/kafka-client/tls.crt
- name: NETMETER_KAFKA_SSL_KEY_LOCATION
  value: /etc/netmeter/kafka-client/tls.key
{{- end }}
{{- with $kafka.options }}
- name: NETMETER_KAFKA_OPTIONS
  value: {{ include "netmeter.keyValues" . | quote }}
{{- end }}
{{- end }}

{{/* A map as sorted, comma-separated KEY=VALUE pairs. */}}
{{- define "netmeter.keyValues" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%v" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "netmeter.kafkaVolumeMounts" -}}
{{- $tls := .Values.kafka.tls }}
{{- if or $tls.ca.existingSecret $tls.ca.existingConfigMap }}
- name: kafka-ca
  mountPath: /etc/netmeter/kafka-ca
  readOnly: true
{{- end }}
{{- if $tls.clientCertificate.existingSecret }}
- name: kafka-client-certificate
  mountPath: /etc/netmeter/kafka-client
  readOnly: true
{{- end }}
{{- end }}

{{- define "netmeter.kafkaVolumes" -}}
{{- $tls := .Values.kafka.tls }}
{{- if $tls.ca.existingSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $tls.ca.existingSecret }}
    items:
      - key: {{ $tls.ca.key }}
        path: {{ $tls.ca.key }}
{{- else if $tls.ca.existingConfigMap }}
- name: kafka-ca
  configMap:
    name: {{ $tls.ca.existingConfigMap }}
    items:
      - key: {{ $tls.ca.key }}
        path: {{ $tls.ca.key }}
{{- end }}
{{- if $tls.clientCertificate.existingSecret }}
- name: kafka-client-certificate
  secret:
    secretName: {{ $tls.clientCertificate.existingSecret }}
    # 0440: root and the pod's fsGroup (the attributor and sink run as nobody).
    defaultMode: 288
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}

{{/* ClickHouse settings of the sink and the Kafka-engine Job. */}}
{{- define "netmeter.clickhouseEnv" -}}
{{- $clickhouse := .Values.clickhouse }}
- name: NETMETER_CLICKHOUSE_URL
  value: {{ $clickhouse.url | quote }}
- name: NETMETER_CLICKHOUSE_DATABASE
  value: {{ $clickhouse.database | quote }}
{{- with $clickhouse.cluster.name }}
- name: NETMETER_CLICKHOUSE_CLUSTER
  value: {{ . | quote }}
- name: NETMETER_CLICKHOUSE_CLUSTER_REPLICATION
  value: {{ $clickhouse.cluster.replication | quote }}
{{- with $clickhouse.cluster.nodes }}
- name: NETMETER_CLICKHOUSE_CLUSTER_NODES
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- with $clickhouse.auth.existingSecret }}
- name: NETMETER_CLICKHOUSE_USER
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $clickhouse.auth.userKey }}
- name: NETMETER_CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $clickhouse.auth.passwordKey }}
{{- end }}
{{- end }}

{{/* Flags of the schema's retention, for every command that migrates. */}}
{{- define "netmeter.retentionArgs" -}}
{{- $retention := .Values.clickhouse.retention }}
- --record-ttl-days={{ int $retention.recordDays }}
- --ttl-days={{ int $retention.detailDays }}
- --rollup-minute-ttl-days={{ int $retention.minuteRollupDays }}
- --rollup-hour-ttl-days={{ int $retention.hourRollupDays }}
{{- end }}

{{/* The attributor, the sink and the Jobs: no root, no capabilities, nothing writable. */}}
{{- define "netmeter.restrictedPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65534
runAsGroup: 65534
# Mounted Secrets (the Kafka client key) belong to this group.
fsGroup: 65534
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "netmeter.restrictedSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Liveness on /healthz, readiness on /readyz, on the container's `metrics` port. */}}
{{- define "netmeter.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
{{- end }}

{{/* host:port for --http-addr; IPv6 addresses in brackets. */}}
{{- define "netmeter.httpAddr" -}}
{{- if contains ":" .address }}[{{ .address }}]:{{ .port }}{{ else }}{{ .address }}:{{ .port }}{{ end }}
{{- end }}
