{{- /*
The platform in one place: each service's port and protocol, whom it calls (ARCHITECTURE.md's
call graph), which stores it uses, which keys its Secret must hold (a pod whose Secret lacks
one does not start). Ingress rules are derived from "calls": a service admits exactly its
callers, with no second copy of the graph.
*/ -}}
{{- define "parley-lib.platform" -}}
gateway:
  protocol: http
  port: 8080
  public: true
  calls: [conversation, ingest, retrieval, llm-router]
  # Its database holds API keys; Redis the rate-limit counters and quotas.
  stores: [database, redis]
  requiredSecrets: [AUTH_SECRET, DATABASE_URL]
conversation:
  protocol: grpc
  # Readiness: health reports this name SERVING while the service's stores answer.
  readinessService: parley.conversation.v1.ConversationService
  port: 50061
  addressVariable: CONVERSATION_ADDR
  calls: [llm-router, retrieval]
  stores: [database]
  requiredSecrets: [DATABASE_URL]
llm-router:
  protocol: grpc
  # Readiness: health reports this name SERVING while the service's stores answer.
  readinessService: parley.llm_router.v1.LlmRouter
  port: 50062
  addressVariable: LLM_ROUTER_ADDR
  calls: []
  stores: [database, redis]
  requiredSecrets: [DATABASE_URL]
retrieval:
  protocol: grpc
  # Readiness: health reports this name SERVING while the service's stores answer.
  readinessService: parley.retrieval.v1.Retrieval
  port: 50063
  addressVariable: RETRIEVAL_ADDR
  calls: []
  stores: [qdrant]
  requiredSecrets: []
  # Its keys (QDRANT_API_KEY, EMBEDDINGS_API_KEY) are needed only by some setups.
  secretOptional: true
ingest:
  protocol: grpc
  # Readiness: health reports this name SERVING while the service's stores answer.
  readinessService: parley.ingest.v1.Ingest
  port: 50064
  addressVariable: INGEST_ADDR
  calls: [retrieval]
  stores: [database]
  requiredSecrets: [DATABASE_URL]
{{- end }}

{{- /* This chart's entry of the platform table; the chart's name is the service's name. */ -}}
{{- define "parley-lib.spec" -}}
{{- $platform := include "parley-lib.platform" . | fromYaml -}}
{{- $spec := get $platform .Chart.Name -}}
{{- if not $spec -}}
{{- fail (printf "parley-lib: %q is not a Parley service" .Chart.Name) -}}
{{- end -}}
{{- toYaml $spec -}}
{{- end }}

{{- /* The services that call this one. */ -}}
{{- define "parley-lib.callers" -}}
{{- $callers := list -}}
{{- range $name, $spec := include "parley-lib.platform" . | fromYaml -}}
{{- if has $.Chart.Name $spec.calls -}}
{{- $callers = append $callers $name -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "callers" $callers) -}}
{{- end }}

{{- /* Object names do not depend on the release name, so peers find each other whether
the services are installed by the umbrella chart or one release each. */ -}}
{{- define "parley-lib.prefix" -}}
{{- .Values.global.namePrefix | default "parley" -}}
{{- end }}

{{- define "parley-lib.fullname" -}}
{{- printf "%s-%s" (include "parley-lib.prefix" .) .Chart.Name -}}
{{- end }}

{{- define "parley-lib.hasDatabase" -}}
{{- if has "database" (include "parley-lib.spec" . | fromYaml).stores -}}true{{- end -}}
{{- end }}

{{- /* Migrations run in a hook Job only for services with a database. */ -}}
{{- define "parley-lib.migrationsEnabled" -}}
{{- if and (include "parley-lib.hasDatabase" .) .Values.migrations.enabled -}}true{{- end -}}
{{- end }}

{{- /* The gRPC address of a peer: its headless Service, which dns:/// clients resolve to
every ready pod. */ -}}
{{- define "parley-lib.peerAddress" -}}
{{- $ctx := index . 0 -}}
{{- $peer := index . 1 -}}
{{- $spec := get (include "parley-lib.platform" $ctx | fromYaml) $peer -}}
{{- $domain := $ctx.Values.global.clusterDomain | default "cluster.local" -}}
{{- $host := printf "%s-%s-headless" (include "parley-lib.prefix" $ctx) $peer -}}
{{- printf "%s.%s.svc.%s:%d" $host $ctx.Release.Namespace $domain (int $spec.port) -}}
{{- end }}

{{- define "parley-lib.secretName" -}}
{{- $global := .Values.global.existingSecrets | default dict -}}
{{- $name := .Values.existingSecret | default (get $global .Chart.Name) -}}
{{- $name | default (include "parley-lib.fullname" .) -}}
{{- end }}

{{- define "parley-lib.image" -}}
{{- $registry := .Values.image.registry | default .Values.global.image.registry -}}
{{- $repository := .Values.image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" $registry $repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- $tag := .Values.image.tag | default .Values.global.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end }}
