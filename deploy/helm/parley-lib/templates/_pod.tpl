{{- /* What every Parley container runs with: the image's fixed non-root user, a read-only
root filesystem with /tmp the only writable place, no privilege, no capability. */ -}}
{{- define "parley-lib.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "parley-lib.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- /* Pull secrets and placement, shared by the Deployment and the migration Job. */ -}}
{{- define "parley-lib.jobScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "parley-lib.podScheduling" -}}
{{- include "parley-lib.jobScheduling" . }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- include "parley-lib.topologySpread" . }}
{{- end }}

{{- /* Spread replicas over nodes and zones; pod-template-hash keeps a rollout's new pods
spread among themselves rather than against the old ones. */ -}}
{{- define "parley-lib.topologySpread" -}}
{{- if .Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - topologyKey: {{ $key }}
    maxSkew: 1
    whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
    matchLabelKeys: [pod-template-hash]
    labelSelector:
      matchLabels:
        {{- include "parley-lib.selectorLabels" $ | nindent 8 }}
  {{- end }}
{{- end }}
{{- end }}

{{- /* Native gRPC probes ask the standard health service: "" for startup and liveness (the
process serves), the service's own name for readiness (its database answers). The gateway
answers /healthz (alive) and /readyz (its peers answer). */ -}}
{{- define "parley-lib.probes" -}}
{{- $spec := include "parley-lib.spec" . | fromYaml -}}
{{- $probes := .Values.probes -}}
{{- range $probe := list "startup" "liveness" "readiness" }}
{{ $probe }}Probe:
  {{- if eq $spec.protocol "grpc" }}
  grpc:
    port: {{ $spec.port }}
    {{- if eq $probe "readiness" }}
    service: {{ $spec.readinessService }}
    {{- end }}
  {{- else }}
  httpGet:
    path: {{ ternary "/readyz" "/healthz" (eq $probe "readiness") }}
    port: http
  {{- end }}
  {{- toYaml (get $probes $probe) | nindent 2 }}
{{- end }}
{{- end }}

{{- /* Settings a service cannot run without, each read from the Secret by its key, so a
Secret that lacks one stops the pod with an error naming it. Argument: (list $ctx keys). */ -}}
{{- define "parley-lib.secretEnv" -}}
{{- $ctx := index . 0 -}}
{{- range $key := index . 1 }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "parley-lib.secretName" $ctx }}
      key: {{ $key }}
{{- end }}
{{- end }}
