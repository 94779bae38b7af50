{{- /* No Parley service talks to the Kubernetes API: no token is mounted. */ -}}
{{- define "parley-lib.serviceaccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  {{- include "parley-lib.metadata" (list . "") | nindent 2 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
