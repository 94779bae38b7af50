variable "name" {
  type        = string
  description = "Replication group id and prefix of its companions (subnet group, key, secret)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,39}$", var.name))
    error_message = "name must be a lowercase id of up to 40 characters (ElastiCache's limit)."
  }
}

variable "vpc_id" {
  type        = string
  description = "The VPC the replication group's security group belongs to."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets in at least two zones, for the primary and its replicas."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must name subnets in at least two zones."
  }
}

variable "client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to connect on 6379 (the cluster's)."

  validation {
    condition     = length(var.client_security_group_ids) > 0
    error_message = "At least one client security group is needed, or nothing can connect."
  }
}

variable "node_type" {
  type        = string
  description = "ElastiCache node type, e.g. cache.t4g.small."

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.node_type))
    error_message = "node_type must be an ElastiCache node type like cache.t4g.small."
  }
}

variable "node_count" {
  type        = number
  description = "Nodes in the group: one primary and node_count - 1 replicas in other zones, which take over automatically."
  default     = 2

  validation {
    condition     = var.node_count >= 2 && var.node_count <= 6
    error_message = "node_count must be from 2 to 6: automatic failover needs a replica."
  }
}

variable "snapshot_retention_days" {
  type        = number
  description = "Days daily snapshots are kept (Redis holds only what may be rebuilt, so a few suffice)."
  default     = 3

  validation {
    condition     = var.snapshot_retention_days >= 1 && var.snapshot_retention_days <= 35
    error_message = "snapshot_retention_days must be from 1 to 35."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the slow log and engine log are kept in CloudWatch."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}
