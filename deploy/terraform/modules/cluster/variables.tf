variable "name" {
  type        = string
  description = "The cluster's name, also the prefix of its IAM roles and keys."
}

variable "kubernetes_version" {
  type        = string
  description = "EKS minor version (e.g. 1.33). The charts are checked against 1.29 and later."

  validation {
    condition     = can(regex("^1\\.(29|[3-9][0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version from 1.29 on, like \"1.33\"."
  }
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets, one per zone, for the control plane's interfaces and the nodes."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must name subnets in at least two zones."
  }
}

variable "endpoint_public_access" {
  type        = bool
  description = "Expose the API server on the internet (to public_access_cidrs only). Off: reachable from the VPC alone."
  default     = false
}

variable "public_access_cidrs" {
  type        = list(string)
  description = "Networks allowed to reach a public API endpoint; required when it is public, and never 0.0.0.0/0."
  default     = []

  validation {
    condition     = alltrue([for cidr in var.public_access_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "public_access_cidrs must be IPv4 CIDRs narrower than 0.0.0.0/0."
  }

  validation {
    condition     = !var.endpoint_public_access || length(var.public_access_cidrs) > 0
    error_message = "A public endpoint needs public_access_cidrs: EKS would otherwise open it to the whole internet."
  }
}

variable "admin_principal_arns" {
  type        = list(string)
  description = "IAM roles or users given cluster-admin through EKS access entries (the identity running Terraform has it already)."
  default     = []

  validation {
    condition     = alltrue([for arn in var.admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/", arn))])
    error_message = "admin_principal_arns must be IAM role or user ARNs."
  }
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
  description = "Managed node groups by name, each spread over every subnet."

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

  validation {
    condition     = alltrue([for group in values(var.node_groups) : contains(["ON_DEMAND", "SPOT"], group.capacity_type)])
    error_message = "capacity_type must be ON_DEMAND or SPOT."
  }

  validation {
    condition     = alltrue([for group in values(var.node_groups) : group.disk_size_gib >= 20])
    error_message = "disk_size_gib must be at least 20 (images and logs live there)."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the control plane's logs are kept in CloudWatch."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}
