output "url" {
  description = "QDRANT_URL for retrieval."
  value       = local.internal ? "http://${helm_release.qdrant[0].name}.${var.namespace}.svc.cluster.local:6333" : var.external_url
}

output "api_key_secret_arn" {
  description = "Secrets Manager secret holding QDRANT_API_KEY (a plain string)."
  value       = local.internal ? aws_secretsmanager_secret.api_key[0].arn : var.external_api_key_secret_arn
}

output "api_key_version_id" {
  description = "The API key's secret version (null for a managed Qdrant: its current one); known once Qdrant runs with it."
  value       = local.internal ? aws_secretsmanager_secret_version.api_key[0].version_id : null
  depends_on  = [helm_release.qdrant]
}

output "network_peers" {
  description = "Where retrieval's egress to Qdrant may go, as NetworkPolicy peers and ports (global.networkPolicy.qdrant of the charts)."
  value       = local.network_peers[local.internal ? "internal" : "external"]
}
