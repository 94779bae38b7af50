output "image_repositories" {
  description = "ECR repository of each service's image: tag and push there before the Parley releases are applied."
  value       = module.registry.repository_urls
}

output "cluster_name" {
  description = "The EKS cluster; aws eks update-kubeconfig --name <it> --region <region> gives kubectl access."
  value       = module.cluster.name
}

output "nat_public_ips" {
  description = "Addresses the cluster's outbound traffic leaves from, for providers' allow lists."
  value       = module.network.nat_public_ips
}

output "public_subnet_ids" {
  description = "Public subnets, for an internet-facing load balancer of the ingress controller."
  value       = module.network.public_subnet_ids
}

output "postgres_address" {
  description = "PostgreSQL host name."
  value       = module.postgres.address
}

output "postgres_master_secret_arn" {
  description = "Secrets Manager secret with the PostgreSQL master user's credentials (rotated by RDS)."
  value       = module.postgres.master_user_secret_arn
}

output "redis_primary_endpoint" {
  description = "Redis primary host name (TLS on the Redis port)."
  value       = module.redis.primary_endpoint
}

output "qdrant_url" {
  description = "The Qdrant retrieval uses."
  value       = module.qdrant.url
}

output "parley_namespace" {
  description = "Namespace of the Parley releases."
  value       = module.parley.namespace
}

output "parley_releases" {
  description = "Helm release and chart version of each service."
  value       = module.parley.releases
}

output "gateway_url" {
  description = "Where the API answers."
  value       = module.parley.gateway_url
}

output "gateway_auth_secret_arn" {
  description = "Secrets Manager secret with AUTH_SECRET, for issuing tokens."
  value       = module.parley.auth_secret_arn
}

output "grafana_admin_secret" {
  description = "Kubernetes Secret (namespace/name) with Grafana's admin credentials; null without observability."
  value       = var.observability_enabled ? module.observability[0].grafana_admin_secret : null
}
