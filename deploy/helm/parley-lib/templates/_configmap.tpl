{{- /* The service's settings as environment variables. Secrets never pass through here:
they come from the Secret named by existingSecret (see the deployment). */ -}}
{{- define "parley-lib.configData" -}}
{{- $spec := include "parley-lib.spec" . | fromYaml -}}
{{- $data := dict
  "LOG_LEVEL" .Values.logLevel
  "METRICS_PORT" "9090"
  "SHUTDOWN_GRACE_SECONDS" (toString .Values.shutdownGraceSeconds)
-}}
{{- if eq $spec.protocol "grpc" -}}
{{- $_ := set $data "GRPC_HOST" "0.0.0.0" -}}
{{- $_ := set $data "GRPC_PORT" (toString $spec.port) -}}
{{- else -}}
{{- $_ := set $data "HTTP_HOST" "0.0.0.0" -}}
{{- $_ := set $data "HTTP_PORT" (toString $spec.port) -}}
{{- end -}}
{{- range $peer := $spec.calls -}}
{{- $peerSpec := get (include "parley-lib.platform" $ | fromYaml) $peer -}}
{{- $_ := set $data $peerSpec.addressVariable (include "parley-lib.peerAddress" (list $ $peer)) -}}
{{- end -}}
{{- with .Values.global.otelEndpoint -}}
{{- $_ := set $data "OTEL_EXPORTER_OTLP_ENDPOINT" . -}}
{{- end -}}
{{- if include "parley-lib.hasDatabase" . -}}
{{- $migrationJob := eq (include "parley-lib.migrationsEnabled" .) "true" -}}
{{- $_ := set $data "DB_AUTO_MIGRATE" (ternary "false" "true" $migrationJob) -}}
{{- end -}}
{{- if .Values.routes -}}
{{- $_ := set $data "ROUTES_FILE" "/etc/parley/routes/routes.yaml" -}}
{{- end -}}
{{- if .Values.streamTimeoutSeconds -}}
{{- $_ := set $data "STREAM_TIMEOUT_SECONDS" (toString .Values.streamTimeoutSeconds) -}}
{{- end -}}
{{- range $key, $value := .Values.config -}}
{{- $_ := set $data $key (toString $value) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end }}

{{- define "parley-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  {{- include "parley-lib.metadata" (list . "") | nindent 2 }}
data:
  {{- include "parley-lib.configData" . | nindent 2 }}
{{- end }}

{{- /* llm-router's routes file. Mounted as a directory (never subPath), so the kubelet
swaps the file in place and the router's reload picks the change up without a restart;
for the same reason it is left out of the pods' checksum annotation. */ -}}
{{- define "parley-lib.routes" -}}
{{- if .Values.routes }}
apiVersion: v1
kind: ConfigMap
metadata:
  {{- include "parley-lib.metadata" (list . "-routes") | nindent 2 }}
data:
  routes.yaml: |
    {{- toYaml .Values.routes | nindent 4 }}
{{- end }}
{{- end }}
