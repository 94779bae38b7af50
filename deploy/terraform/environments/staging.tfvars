# Staging: the production layout at a smaller size. No secrets here: keys live in Secrets
# Manager and are named by ARN.
environment = "staging"
region      = "eu-west-1"

availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
vpc_cidr           = "10.20.0.0/16"
single_nat_gateway = true

kubernetes_version             = "1.33"
cluster_endpoint_public_access = true
# Replace with the operators' and CI runners' public addresses.
cluster_public_access_cidrs = ["203.0.113.0/24"]

node_groups = {
  general = {
    instance_types = ["m7i.large", "m6i.large"]
    min_size       = 2
    max_size       = 6
    desired_size   = 3
  }
}

postgres_instance_class        = "db.t4g.medium"
postgres_allocated_storage_gib = 20
postgres_multi_az              = false
postgres_backup_retention_days = 3

redis_node_type  = "cache.t4g.small"
redis_node_count = 2

qdrant_replicas     = 1
qdrant_storage_size = "20Gi"

log_retention_days   = 30
prometheus_retention = "7d"
tempo_retention      = "48h"

# Images come from the ECR repositories this configuration makes (output image_repositories).
image_tag = "0.1.0"

autoscaling = {
  gateway      = { min_replicas = 2, max_replicas = 4 }
  conversation = { min_replicas = 2, max_replicas = 4 }
  llm-router   = { min_replicas = 2, max_replicas = 4 }
  retrieval    = { min_replicas = 2, max_replicas = 4 }
  ingest       = { min_replicas = 2, max_replicas = 4 }
}
