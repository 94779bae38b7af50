{{- define "parley-lib.deployment" -}}
{{- $spec := include "parley-lib.spec" . | fromYaml -}}
{{- $fullname := include "parley-lib.fullname" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "parley-lib.metadata" (list . "") | nindent 2 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "parley-lib.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # A new pod is ready before an old one goes: capacity never drops in a rollout.
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "parley-lib.labels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include "parley-lib.configData" . | sha256sum }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $fullname }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- include "parley-lib.podSecurityContext" . | nindent 8 }}
      # The preStop pause lets endpoints drop the pod before it stops accepting, then the
      # service drains for SHUTDOWN_GRACE_SECONDS; the kill comes only after both.
      {{- $grace := add .Values.preStopSeconds .Values.shutdownGraceSeconds 10 }}
      terminationGracePeriodSeconds: {{ $grace }}
      {{- with include "parley-lib.podScheduling" . }}
      {{- . | trim | nindent 6 }}
      {{- end }}
      containers:
        - name: {{ .Chart.Name }}
          image: {{ include "parley-lib.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: [parley-{{ .Chart.Name }}]
          ports:
            - name: {{ $spec.protocol }}
              containerPort: {{ $spec.port }}
              protocol: TCP
            - name: metrics
              containerPort: 9090
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ $fullname }}
            - secretRef:
                name: {{ include "parley-lib.secretName" . }}
                optional: {{ $spec.secretOptional | default false }}
          {{- with $spec.requiredSecrets }}
          env:
            {{- include "parley-lib.secretEnv" (list $ .) | trim | nindent 12 }}
          {{- end }}
          {{- include "parley-lib.probes" . | trim | nindent 10 }}
          lifecycle:
            preStop:
              exec:
                command: [sleep, {{ .Values.preStopSeconds | quote }}]
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- include "parley-lib.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if .Values.routes }}
            - name: routes
              mountPath: /etc/parley/routes
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ .Values.tmpSizeLimit }}
        {{- if .Values.routes }}
        - name: routes
          configMap:
            name: {{ $fullname }}-routes
        {{- end }}
{{- end }}
