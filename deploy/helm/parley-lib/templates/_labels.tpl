{{- /* Selector labels name the service and the platform, not the release: the umbrella
release and one release per service then select the same pods, and NetworkPolicies can
name a caller by these labels alone. */ -}}
{{- define "parley-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/part-of: {{ include "parley-lib.prefix" . }}
app.kubernetes.io/component: server
{{- end }}

{{- /* The selector of another Parley service's pods. */ -}}
{{- define "parley-lib.peerSelector" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/part-of: {{ include "parley-lib.prefix" $ctx }}
app.kubernetes.io/component: server
{{- end }}

{{- define "parley-lib.migrationSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/part-of: {{ include "parley-lib.prefix" . }}
app.kubernetes.io/component: migration
{{- end }}

{{- define "parley-lib.commonLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "parley-lib.labels" -}}
{{ include "parley-lib.selectorLabels" . }}
{{ include "parley-lib.commonLabels" . }}
{{- end }}

{{- define "parley-lib.migrationLabels" -}}
{{ include "parley-lib.migrationSelectorLabels" . }}
{{ include "parley-lib.commonLabels" . }}
{{- end }}

{{- /* metadata: name, namespace and labels of a server object; the argument is
(list $ctx suffix). */ -}}
{{- define "parley-lib.metadata" -}}
{{- $ctx := index . 0 -}}
{{- $suffix := index . 1 -}}
name: {{ include "parley-lib.fullname" $ctx }}{{ $suffix }}
namespace: {{ $ctx.Release.Namespace }}
labels:
  {{- include "parley-lib.labels" $ctx | nindent 2 }}
{{- end }}
