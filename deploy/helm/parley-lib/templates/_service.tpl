{{- define "parley-lib.service" -}}
{{- $spec := include "parley-lib.spec" . | fromYaml -}}
apiVersion: v1
kind: Service
metadata:
  {{- include "parley-lib.metadata" (list . "") | nindent 2 }}
spec:
  type: ClusterIP
  selector:
    {{- include "parley-lib.selectorLabels" . | nindent 4 }}
  ports:
    - name: {{ $spec.protocol }}
      port: {{ $spec.port }}
      targetPort: {{ $spec.protocol }}
      protocol: TCP
    - name: metrics
      port: 9090
      targetPort: metrics
      protocol: TCP
{{- if eq $spec.protocol "grpc" }}
---
# gRPC clients resolve this name (dns:///) to every ready pod and balance their calls over
# them: a ClusterIP would pin each long-lived HTTP/2 connection to one pod.
apiVersion: v1
kind: Service
metadata:
  {{- include "parley-lib.metadata" (list . "-headless") | nindent 2 }}
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    {{- include "parley-lib.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $spec.port }}
      targetPort: grpc
      protocol: TCP
{{- end }}
{{- end }}
