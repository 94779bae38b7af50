# Environment

variable "environment" {
  type        = string
  description = "Which environment this state describes; production turns on deletion protection."

  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "name" {
  type        = string
  description = "Prefix of every resource name; <name>-<environment> names the cluster, the database and the rest."
  default     = "parley"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.name))
    error_message = "name must be 2 to 16 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "AWS region of everything, e.g. eu-west-1."

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name like eu-west-1."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every AWS resource (Project, Environment and ManagedBy are always set)."
  default     = {}
}

variable "log_retention_days" {
  type        = number
  description = "Days CloudWatch keeps the VPC flow logs and the cluster, PostgreSQL and Redis logs."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}

# Network

variable "vpc_cidr" {
  type        = string
  description = "The VPC's IPv4 range, /16 to /20; it must not overlap networks it will be peered with."

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be an IPv4 CIDR with a prefix from /16 to /20."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Zones of the region the subnets, nodes and store replicas spread over (three for production)."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must name at least two distinct zones."
  }

  validation {
    condition     = alltrue([for zone in var.availability_zones : can(regex("^${var.region}[a-z]$", zone))])
    error_message = "availability_zones must be zones of the region (e.g. eu-west-1a for eu-west-1)."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones (cheaper; egress stops if its zone fails) instead of one per zone."
  default     = false
}

# Cluster

variable "kubernetes_version" {
  type        = string
  description = "EKS minor version, e.g. 1.33 (the charts support 1.29 and later)."

  validation {
    condition     = can(regex("^1\\.(29|[3-9][0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version from 1.29 on, like \"1.33\"."
  }
}

variable "cluster_endpoint_public_access" {
  type        = bool
  description = "Expose the Kubernetes API on the internet, to cluster_public_access_cidrs only; off, Terraform must run from inside the VPC (VPN, bastion, CI runner)."
  default     = false
}

variable "cluster_public_access_cidrs" {
  type        = list(string)
  description = "Networks allowed to reach a public Kubernetes API (the operators' and CI's addresses)."
  default     = []

  validation {
    condition     = alltrue([for cidr in var.cluster_public_access_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "cluster_public_access_cidrs must be IPv4 CIDRs narrower than 0.0.0.0/0."
  }

  validation {
    condition     = !var.cluster_endpoint_public_access || length(var.cluster_public_access_cidrs) > 0
    error_message = "A public endpoint needs cluster_public_access_cidrs: EKS would otherwise open it to the whole internet."
  }
}

variable "cluster_admin_principal_arns" {
  type        = list(string)
  description = "IAM roles or users given cluster-admin (the identity that creates the cluster has it already)."
  default     = []
}

variable "node_groups" {
  type = map(object({
    instance_types = list(string)
    capacity_type  = optional(string, "ON_DEMAND")
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gib  = optional(number, 50)
    labels         = optional(map(string), {})
  }))
  description = "Managed node groups by name, each across every zone."

  validation {
    condition     = length(var.node_groups) > 0
    error_message = "node_groups must define at least one group."
  }

  validation {
    condition     = alltrue([for group in values(var.node_groups) : length(group.instance_types) > 0 && alltrue([for type in group.instance_types : trimspace(type) != ""])])
    error_message = "Every node group needs at least one non-empty instance type."
  }

  validation {
    condition     = alltrue([for group in values(var.node_groups) : group.min_size > 0 && group.min_size <= group.desired_size && group.desired_size <= group.max_size])
    error_message = "Every node group needs 0 < min_size <= desired_size <= max_size."
  }
}

# PostgreSQL

variable "postgres_instance_class" {
  type        = string
  description = "RDS instance class, e.g. db.t4g.medium or db.r7g.large."

  validation {
    condition     = trimspace(var.postgres_instance_class) != ""
    error_message = "postgres_instance_class must not be empty."
  }
}

variable "postgres_allocated_storage_gib" {
  type        = number
  description = "Initial PostgreSQL storage in GiB (it grows on its own up to postgres_max_allocated_storage_gib)."
  default     = 50

  validation {
    condition     = var.postgres_allocated_storage_gib >= 20
    error_message = "postgres_allocated_storage_gib must be at least 20."
  }
}

variable "postgres_max_allocated_storage_gib" {
  type        = number
  description = "Ceiling of PostgreSQL storage autoscaling in GiB."
  default     = 500

  validation {
    condition     = var.postgres_max_allocated_storage_gib >= var.postgres_allocated_storage_gib
    error_message = "postgres_max_allocated_storage_gib must be at least postgres_allocated_storage_gib."
  }
}

variable "postgres_multi_az" {
  type        = bool
  description = "Keep a synchronous PostgreSQL standby in a second zone."
  default     = true
}

variable "postgres_backup_retention_days" {
  type        = number
  description = "Days of automated backups and point-in-time recovery."
  default     = 14

  validation {
    condition     = var.postgres_backup_retention_days >= 1 && var.postgres_backup_retention_days <= 35
    error_message = "postgres_backup_retention_days must be from 1 to 35."
  }
}

variable "postgres_iam_authentication" {
  type        = bool
  description = "Also accept IAM authentication tokens (for people and tools; the services use the password)."
  default     = true
}

variable "postgres_password_rotation_schedule" {
  type        = string
  description = "When RDS rotates the master password (cron or rate, UTC, within the hour); each rotation needs a terraform apply after it (README.md)."
  default     = "cron(0 4 ? * TUE#1 *)"
}

# Redis

variable "redis_node_type" {
  type        = string
  description = "ElastiCache node type, e.g. cache.t4g.small."

  validation {
    condition     = trimspace(var.redis_node_type) != ""
    error_message = "redis_node_type must not be empty."
  }
}

variable "redis_node_count" {
  type        = number
  description = "Redis nodes: a primary and replicas in other zones (at least 2, for automatic failover)."
  default     = 2

  validation {
    condition     = var.redis_node_count >= 2
    error_message = "redis_node_count must be at least 2."
  }
}

# Qdrant

variable "qdrant_external_url" {
  type        = string
  description = "A managed Qdrant's URL (e.g. Qdrant Cloud); null installs Qdrant in the cluster with the vendor's chart."
  default     = null
}

variable "qdrant_external_api_key_secret_arn" {
  type        = string
  description = "Secrets Manager secret with the managed Qdrant's API key; required with qdrant_external_url."
  default     = null
}

variable "qdrant_replicas" {
  type        = number
  description = "In-cluster Qdrant nodes."
  default     = 1

  validation {
    condition     = var.qdrant_replicas > 0
    error_message = "qdrant_replicas must be at least 1."
  }
}

variable "qdrant_storage_size" {
  type        = string
  description = "Volume size of each in-cluster Qdrant node, e.g. 50Gi."
  default     = "50Gi"
}

# Observability

variable "observability_enabled" {
  type        = bool
  description = "Install the OpenTelemetry Collector, Prometheus, Grafana and Tempo, and point the services at them."
  default     = true
}

variable "prometheus_retention" {
  type        = string
  description = "How long Prometheus keeps samples, e.g. 15d."
  default     = "15d"
}

variable "tempo_retention" {
  type        = string
  description = "How long Tempo keeps traces, e.g. 72h."
  default     = "72h"
}

# Parley

variable "image_registry" {
  type        = string
  description = "Registry path the parley-<service> images are pulled from; null: the ECR repositories made here (output image_repositories)."
  default     = null

  validation {
    condition     = var.image_registry == null || can(regex("^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$", var.image_registry))
    error_message = "image_registry must be a registry host with an optional path, e.g. registry.example.com/parley."
  }
}

variable "image_tag" {
  type        = string
  description = "The Parley version to run: the tag of all five images."

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid image tag."
  }
}

variable "provider_keys_secret_arn" {
  type        = string
  description = "Secrets Manager secret, a JSON object like {\"OPENAI_API_KEY\": \"...\", \"ANTHROPIC_API_KEY\": \"...\"}, made by an operator; null runs without providers (offline local provider)."
  default     = null
}

variable "embeddings_api_key_secret_arn" {
  type        = string
  description = "Secrets Manager secret with EMBEDDINGS_API_KEY (remote embeddings); null uses the local model."
  default     = null
}

variable "llm_router_routes_file" {
  type        = string
  description = "Path, from this folder, of llm-router's routes file (YAML); null: routes from the provider keys."
  default     = null
}

variable "gateway_ingress" {
  type = object({
    host            = string
    class_name      = optional(string, "nginx")
    tls_secret_name = optional(string, "")
    annotations     = optional(map(string), {})
  })
  description = "The gateway's Ingress through an installed ingress controller; null: the API is reachable inside the cluster only."
  default     = null
}

variable "ingress_controller_namespace" {
  type        = string
  description = "Namespace of the ingress controller pods, the only outside source the gateway admits."
  default     = "ingress-nginx"
}

variable "autoscaling" {
  type = map(object({
    min_replicas = number
    max_replicas = number
  }))
  description = "Replica bounds of the services' autoscalers, by service name; others keep their chart's."
  default     = {}
}

variable "parley_extra_values" {
  type        = map(string)
  description = "More chart values (YAML) by service name, applied last."
  default     = {}
}
