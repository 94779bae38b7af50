{{- /* For the Prometheus operator; the headless Service has no metrics port, so each pod
is scraped once. The job label is the service's name (gateway, conversation...), whatever the
name prefix, as the services name themselves in traces (service.name): Tempo's links from a
span to its service's metrics match the two. Prometheus asks for OpenMetrics first, so
latency histograms arrive with their exemplars. */ -}}
{{- define "parley-lib.servicemonitor" -}}
{{- if .Values.serviceMonitor.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  {{- include "parley-lib.metadata" (list . "") | nindent 2 }}
    {{- with .Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  jobLabel: app.kubernetes.io/name
  selector:
    matchLabels:
      {{- include "parley-lib.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames: [{{ .Release.Namespace }}]
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ .Values.serviceMonitor.interval }}
{{- end }}
{{- end }}
