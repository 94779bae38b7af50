output "namespace" {
  description = "Namespace of the Parley releases."
  value       = kubernetes_namespace_v1.parley.metadata[0].name
}

output "releases" {
  description = "Helm release of each service, with the chart version it runs (helm upgrade <release> deploy/helm/<service> upgrades one)."
  value       = { for service, release in helm_release.service : service => "${release.name}@${release.metadata[0].version}" }
}

output "auth_secret_arn" {
  description = "Secrets Manager secret with the gateway's AUTH_SECRET, to issue tokens (parley-gateway token)."
  value       = aws_secretsmanager_secret.auth.arn
}

output "gateway_url" {
  description = "Where clients reach the API: the Ingress host, else the in-cluster Service."
  value       = var.gateway_ingress == null ? "http://parley-gateway.${kubernetes_namespace_v1.parley.metadata[0].name}.svc.cluster.local:8080" : "${var.gateway_ingress.tls_secret_name == "" ? "http" : "https"}://${var.gateway_ingress.host}"
}
