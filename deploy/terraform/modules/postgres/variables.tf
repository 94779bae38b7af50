variable "name" {
  type        = string
  description = "Identifier of the instance and prefix of its companions (subnet group, keys, roles)."
}

variable "vpc_id" {
  type        = string
  description = "The VPC the instance's security group belongs to."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets in at least two zones, for the primary and its Multi-AZ standby."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must name subnets in at least two zones."
  }
}

variable "client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to connect on 5432 (the cluster's)."

  validation {
    condition     = length(var.client_security_group_ids) > 0
    error_message = "At least one client security group is needed, or nothing can connect."
  }
}

variable "instance_class" {
  type        = string
  description = "RDS instance class, e.g. db.t4g.medium (Performance Insights needs medium or larger)."

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.instance_class)) && !can(regex("\\.(micro|small)$", var.instance_class))
    error_message = "instance_class must be an RDS class like db.t4g.medium; micro and small lack Performance Insights."
  }
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL version: the major (15), and minor updates applied in the maintenance window, or a pinned minor (15.8)."
  default     = "15"

  validation {
    condition     = can(regex("^15(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be PostgreSQL 15 (\"15\" or \"15.N\"): the parameter group family is postgres15."
  }
}

variable "allocated_storage_gib" {
  type        = number
  description = "Initial storage in GiB."
  default     = 50

  validation {
    condition     = var.allocated_storage_gib >= 20
    error_message = "allocated_storage_gib must be at least 20 (the gp3 minimum)."
  }
}

variable "max_allocated_storage_gib" {
  type        = number
  description = "Storage autoscaling ceiling in GiB."
  default     = 500

  validation {
    condition     = var.max_allocated_storage_gib >= 20
    error_message = "max_allocated_storage_gib must be at least 20."
  }
}

variable "multi_az" {
  type        = bool
  description = "Keep a synchronous standby in a second zone (automatic failover)."
  default     = true
}

variable "backup_retention_days" {
  type        = number
  description = "Days automated backups and point-in-time recovery reach back."
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be from 1 to 35."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse deletion of the instance (production); without it a destroy still takes a final snapshot."
  default     = true
}

variable "iam_authentication" {
  type        = bool
  description = "Also accept IAM database authentication tokens (the services use the password; people and tools may use IAM)."
  default     = true
}

variable "database_name" {
  type        = string
  description = "The database made at creation; the services share it, each with its own tables and migration history."
  default     = "parley"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must be a lowercase PostgreSQL identifier."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the PostgreSQL logs exported to CloudWatch are kept."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}

variable "password_rotation_schedule" {
  type        = string
  description = "When RDS rotates the master password (a Secrets Manager cron or rate expression, UTC; it happens within the hour). The services read it at start only: run terraform apply after each rotation (README.md)."
  default     = "cron(0 4 ? * TUE#1 *)"

  validation {
    condition     = can(regex("^(cron|rate)\\(.+\\)$", var.password_rotation_schedule))
    error_message = "password_rotation_schedule must be a cron(...) or rate(...) expression."
  }
}
