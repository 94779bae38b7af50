{{- /* Database migrations as a hook: Helm runs the Job, and waits for it to succeed, before
it applies the new Deployment, so no pod of a new version meets an old schema; the pods
themselves start with DB_AUTO_MIGRATE=false. Hooks run before the release's own objects
exist, so the Job brings its own ServiceAccount and NetworkPolicy (created first: lower
weight) and reads only the Secret, which the operator created beforehand. */ -}}
{{- define "parley-lib.migrationHook" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ index . 0 | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}

{{- define "parley-lib.migrationMetadata" -}}
{{- $ctx := index . 0 -}}
name: {{ include "parley-lib.fullname" $ctx }}-migrate
namespace: {{ $ctx.Release.Namespace }}
labels:
  {{- include "parley-lib.migrationLabels" $ctx | nindent 2 }}
annotations:
  {{- include "parley-lib.migrationHook" (list (index . 1)) | nindent 2 }}
{{- end }}

{{- define "parley-lib.migration" -}}
{{- if include "parley-lib.migrationsEnabled" . }}
{{- $net := .Values.global.networkPolicy -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  {{- include "parley-lib.migrationMetadata" (list . -10) | nindent 2 }}
automountServiceAccountToken: false
{{- if $net.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  {{- include "parley-lib.migrationMetadata" (list . -10) | nindent 2 }}
spec:
  podSelector:
    matchLabels:
      {{- include "parley-lib.migrationSelectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  egress:
    {{- include "parley-lib.dnsEgress" . | nindent 4 }}
    {{- include "parley-lib.egressTo" (list $net.database) | nindent 4 }}
{{- end }}
---
apiVersion: batch/v1
kind: Job
metadata:
  {{- include "parley-lib.migrationMetadata" (list . 0) | nindent 2 }}
spec:
  backoffLimit: {{ .Values.migrations.backoffLimit }}
  activeDeadlineSeconds: {{ .Values.migrations.activeDeadlineSeconds }}
  template:
    metadata:
      labels:
        {{- include "parley-lib.migrationLabels" . | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "parley-lib.fullname" . }}-migrate
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- include "parley-lib.podSecurityContext" . | nindent 8 }}
      {{- with include "parley-lib.jobScheduling" . }}
      {{- . | trim | nindent 6 }}
      {{- end }}
      containers:
        - name: migrate
          image: {{ include "parley-lib.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: [parley-{{ .Chart.Name }}]
          args: [migrate, upgrade]
          env:
            - name: LOG_LEVEL
              value: {{ .Values.logLevel }}
            {{- include "parley-lib.secretEnv" (list . (list "DATABASE_URL")) | trim | nindent 12 }}
          resources:
            {{- toYaml .Values.migrations.resources | nindent 12 }}
          securityContext:
            {{- include "parley-lib.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}
{{- end }}
