# Production: three zones, a NAT gateway per zone, Multi-AZ PostgreSQL, a private Kubernetes
# API. No secrets here: keys live in Secrets Manager and are named by ARN.
environment = "production"
region      = "eu-west-1"

availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
vpc_cidr           = "10.10.0.0/16"
single_nat_gateway = false

kubernetes_version = "1.33"
# The API answers inside the VPC only: run Terraform from a runner in the VPC (or over VPN).
cluster_endpoint_public_access = false

node_groups = {
  general = {
    instance_types = ["m7i.xlarge", "m6i.xlarge"]
    min_size       = 3
    max_size       = 12
    desired_size   = 3
  }
}

postgres_instance_class            = "db.r7g.large"
postgres_allocated_storage_gib     = 100
postgres_max_allocated_storage_gib = 1000
postgres_multi_az                  = true
postgres_backup_retention_days     = 30

redis_node_type  = "cache.r7g.large"
redis_node_count = 3

qdrant_replicas     = 3
qdrant_storage_size = "200Gi"

log_retention_days   = 365
prometheus_retention = "30d"
tempo_retention      = "168h"

# Images come from the ECR repositories this configuration makes (output image_repositories).
image_tag = "0.1.0"

# Made beforehand with the providers' keys (README.md).
provider_keys_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:parley/production/provider-keys-AbCdEf"

gateway_ingress = {
  host            = "parley.example.com"
  tls_secret_name = "parley-gateway-tls"
}

autoscaling = {
  gateway      = { min_replicas = 3, max_replicas = 20 }
  conversation = { min_replicas = 3, max_replicas = 20 }
  llm-router   = { min_replicas = 3, max_replicas = 20 }
  retrieval    = { min_replicas = 3, max_replicas = 12 }
  ingest       = { min_replicas = 2, max_replicas = 8 }
}
