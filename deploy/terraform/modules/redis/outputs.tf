output "primary_endpoint" {
  description = "Host name of the current primary (it follows a failover)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "The Redis port (TLS)."
  value       = aws_elasticache_replication_group.this.port
}

output "auth_token_secret_arn" {
  description = "Secrets Manager secret holding the AUTH token (a plain string)."
  value       = aws_secretsmanager_secret.auth.arn
}

output "auth_token_version_id" {
  description = "The token's secret version; known once Redis accepts it, so clients switch only then."
  value       = aws_secretsmanager_secret_version.auth.version_id
  depends_on  = [aws_elasticache_replication_group.this]
}
