output "otlp_endpoint" {
  description = "OTEL_EXPORTER_OTLP_ENDPOINT for the services (OTLP over gRPC)."
  value       = "http://${helm_release.opentelemetry_collector.name}.${var.namespace}.svc.cluster.local:4317"
}

output "namespace" {
  description = "The stack's namespace: the charts admit metric scrapes from it and send traces into it."
  value       = kubernetes_namespace_v1.this.metadata[0].name
}

output "service_monitors_ready" {
  description = "True once the Prometheus operator and its ServiceMonitor CRD are installed."
  value       = helm_release.kube_prometheus_stack.status == "deployed"
}

output "grafana_admin_secret" {
  description = "Kubernetes Secret (namespace/name) holding Grafana's admin user and password."
  value       = "${var.namespace}/${kubernetes_secret_v1.grafana_admin.metadata[0].name}"
}
