{{/* Names and labels. */}}
{{- define "placeos-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "placeos-exporter.fullname" -}}
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

{{- define "placeos-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "placeos-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "placeos-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "placeos-exporter.labels" -}}
helm.sh/chart: {{ include "placeos-exporter.chart" . }}
{{ include "placeos-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: placeos
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "placeos-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "placeos-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "placeos-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the Secret and the YAML config are mounted (docs/deploy.md names these paths). */}}
{{- define "placeos-exporter.secretsDir" -}}/etc/placeos-exporter/secrets{{- end }}
{{- define "placeos-exporter.configDir" -}}/etc/placeos-exporter/config{{- end }}

{{/* The clusters of the YAML config (empty: one cluster from the environment). */}}
{{- define "placeos-exporter.clusters" -}}
{{- $clusters := list }}
{{- if kindIs "map" .Values.config }}
{{- $clusters = .Values.config.clusters | default list }}
{{- end }}
{{- toJson $clusters }}
{{- end }}

{{/*
"true" when a PlaceOS cluster is configured (else empty): config.clusters, or a setting of the default
cluster in env (non-empty), extraEnv or secretKeys. Those are PlaceOS's names (ETCD_*, RETHINKDB_*, PG_*,
REDIS_*, ELASTIC_* or ES_*, PLACE_*, HD_SERVICE_*) and PLACEOS_EXPORTER_<section>_*, also as <name>_FILE;
exporter-wide PLACEOS_EXPORTER_* settings (log level, interval, ...) say nothing about where PlaceOS is.
*/}}
{{- define "placeos-exporter.clusterConfigured" -}}
{{- $pattern := "^(PLACEOS_EXPORTER_(API|ETCD|REDIS|RETHINKDB|POSTGRES|ELASTICSEARCH)|ETCD|RETHINKDB|PG|REDIS|ELASTIC|ES|PLACE|HD_SERVICE)_" }}
{{- $names := list }}
{{- range $name, $value := (.Values.env | default dict) }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- range (.Values.extraEnv | default list) }}
{{- $names = append $names (toString .name) }}
{{- end }}
{{- range $name, $key := (.Values.secretKeys | default dict) }}
{{- if $key }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- $configured := gt (len (include "placeos-exporter.clusters" . | fromJsonArray)) 0 }}
{{- range $names }}
{{- if regexMatch $pattern . }}
{{- $configured = true }}
{{- end }}
{{- end }}
{{- if $configured }}true{{ end }}
{{- end }}

{{/* The port of a URL: explicit, or the scheme's default. */}}
{{- define "placeos-exporter.urlPort" -}}
{{- $url := urlParse . }}
{{- $port := regexFind ":[0-9]+$" (get $url "host") | trimPrefix ":" }}
{{- if not $port }}
{{- $defaults := dict "http" "80" "https" "443" "ws" "80" "wss" "443" "redis" "6379" "rediss" "6379" "postgres" "5432" "postgresql" "5432" }}
{{- $port = get $defaults (get $url "scheme") }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
Egress ports of the NetworkPolicy, as a JSON list of ints, sorted: networkPolicy.egress.ports plus
every port set in env or in config.clusters (explicit ports, and the ports of URLs).
*/}}
{{- define "placeos-exporter.egressPorts" -}}
{{- $ports := list }}
{{- range .Values.networkPolicy.egress.ports }}
{{- $ports = append $ports (toString .) }}
{{- end }}
{{- $env := .Values.env | default dict }}
{{- range (list "ETCD_PORT" "RETHINKDB_PORT" "PG_PORT" "ELASTIC_PORT" "ES_PORT" "PLACEOS_EXPORTER_ETCD_PORT" "PLACEOS_EXPORTER_RETHINKDB_PORT" "PLACEOS_EXPORTER_POSTGRES_PORT" "PLACEOS_EXPORTER_ELASTICSEARCH_PORT") }}
{{- with get $env . }}
{{- $ports = append $ports (toString .) }}
{{- end }}
{{- end }}
{{- range (list "REDIS_URL" "PG_DATABASE_URL" "PLACE_URI" "ELASTIC_URI" "ES_URI" "PLACEOS_EXPORTER_REDIS_URL" "PLACEOS_EXPORTER_POSTGRES_URL" "PLACEOS_EXPORTER_API_URL" "PLACEOS_EXPORTER_API_TRIGGERS_URL" "PLACEOS_EXPORTER_ELASTICSEARCH_URI") }}
{{- with get $env . }}
{{- $ports = append $ports (include "placeos-exporter.urlPort" (toString .)) }}
{{- end }}
{{- end }}
{{- range (include "placeos-exporter.clusters" . | fromJsonArray) }}
{{- $cluster := . }}
{{- range (list "api" "etcd" "redis" "rethinkdb" "postgres" "elasticsearch") }}
{{- $section := get $cluster . | default dict }}
{{- with get $section "port" }}
{{- $ports = append $ports (toString .) }}
{{- end }}
{{- range (list "url" "uri" "triggers_url") }}
{{- with get $section . }}
{{- $ports = append $ports (include "placeos-exporter.urlPort" (toString .)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $padded := list }}
{{- range $ports }}
{{- if . }}
{{- $padded = append $padded (printf "%05d" (atoi .)) }}
{{- end }}
{{- end }}
{{- $sorted := list }}
{{- range ($padded | uniq | sortAlpha) }}
{{- $sorted = append $sorted (atoi .) }}
{{- end }}
{{- toJson $sorted }}
{{- end }}
