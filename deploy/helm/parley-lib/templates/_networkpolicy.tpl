{{- /* An egress rule to a store or collector named in global.networkPolicy: {to, ports}. */ -}}
{{- define "parley-lib.egressTo" -}}
{{- $target := index . 0 -}}
- to:
    {{- toYaml $target.to | nindent 4 }}
  ports:
    {{- range $target.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}

{{- define "parley-lib.dnsEgress" -}}
- to:
    {{- toYaml .Values.global.networkPolicy.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{- /* Two policies per service. The first denies every flow to and from its pods; the second
admits the callers of the call graph, metrics scrapers, and the egress the service needs:
DNS, its callees, its stores, the trace collector (llm-router also the providers on 443). */ -}}
{{- define "parley-lib.networkpolicies" -}}
{{- if .Values.global.networkPolicy.enabled }}
{{- $spec := include "parley-lib.spec" . | fromYaml -}}
{{- $platform := include "parley-lib.platform" . | fromYaml -}}
{{- $net := .Values.global.networkPolicy -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  {{- include "parley-lib.metadata" (list . "-deny") | nindent 2 }}
spec:
  podSelector:
    matchLabels:
      {{- include "parley-lib.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  {{- include "parley-lib.metadata" (list . "-allow") | nindent 2 }}
spec:
  podSelector:
    matchLabels:
      {{- include "parley-lib.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- $callers := (include "parley-lib.callers" . | fromYaml).callers }}
    {{- if $callers }}
    - from:
        {{- range $callers }}
        - podSelector:
            matchLabels:
              {{- include "parley-lib.peerSelector" (list $ .) | nindent 14 }}
        {{- end }}
      ports:
        - port: {{ $spec.protocol }}
          protocol: TCP
    {{- end }}
    {{- if $spec.public }}
    # Reached from outside the platform, through the ingress controller or Gateway.
    - ports:
        - port: {{ $spec.protocol }}
          protocol: TCP
      {{- with .Values.networkPolicy.ingressFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- with $net.metricsScrapers }}
    - from:
        {{- toYaml . | nindent 8 }}
      ports:
        - port: metrics
          protocol: TCP
    {{- end }}
    {{- with .Values.networkPolicy.extraIngress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  egress:
    {{- include "parley-lib.dnsEgress" . | nindent 4 }}
    {{- range $peer := $spec.calls }}
    - to:
        - podSelector:
            matchLabels:
              {{- include "parley-lib.peerSelector" (list $ $peer) | nindent 14 }}
      ports:
        - port: {{ (get $platform $peer).port }}
          protocol: TCP
    {{- end }}
    {{- range $store := $spec.stores }}
    {{- include "parley-lib.egressTo" (list (get $net $store)) | nindent 4 }}
    {{- end }}
    {{- if .Values.global.otelEndpoint }}
    {{- include "parley-lib.egressTo" (list $net.otelCollector) | nindent 4 }}
    {{- end }}
    {{- with .Values.networkPolicy.providers }}
    # Model providers' HTTPS APIs, outside the cluster.
    - to:
        - ipBlock:
            cidr: {{ .cidr }}
            {{- with .except }}
            except:
              {{- toYaml . | nindent 14 }}
            {{- end }}
      ports:
        {{- range .ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- with .Values.networkPolicy.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}
