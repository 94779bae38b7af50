variable "name" {
  type        = string
  description = "Prefix of the Secrets Manager entry, e.g. parley-staging."
}

variable "external_url" {
  type        = string
  description = "URL of a managed Qdrant (e.g. Qdrant Cloud) to use instead of installing one in the cluster; null installs the vendor's chart."
  default     = null

  validation {
    condition     = var.external_url == null || can(regex("^https?://[^/]+", var.external_url))
    error_message = "external_url must be an http(s) URL."
  }
}

variable "external_api_key_secret_arn" {
  type        = string
  description = "Secrets Manager secret holding the managed Qdrant's API key (a plain string); required with external_url."
  default     = null

  validation {
    condition     = var.external_api_key_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.external_api_key_secret_arn))
    error_message = "external_api_key_secret_arn must be a Secrets Manager secret ARN."
  }

  validation {
    condition     = (var.external_url == null) == (var.external_api_key_secret_arn == null)
    error_message = "external_url and external_api_key_secret_arn go together: set both, or neither to install Qdrant in the cluster."
  }
}

variable "namespace" {
  type        = string
  description = "Namespace of the in-cluster Qdrant."
  default     = "qdrant"
}

variable "chart_version" {
  type        = string
  description = "Version of the qdrant/qdrant chart (it installs the Qdrant release of the same number)."
  default     = "1.19.0"
}

variable "replicas" {
  type        = number
  description = "Qdrant nodes; more than one forms a distributed cluster (collections then need a replication factor to survive a node)."
  default     = 1

  validation {
    condition     = var.replicas > 0
    error_message = "replicas must be at least 1."
  }
}

variable "storage_size" {
  type        = string
  description = "Persistent volume size of each node, e.g. 50Gi."
  default     = "50Gi"

  validation {
    condition     = can(regex("^[1-9][0-9]*(Gi|Ti)$", var.storage_size))
    error_message = "storage_size must be a quantity in Gi or Ti, e.g. 50Gi."
  }
}

variable "storage_class" {
  type        = string
  description = "StorageClass of the volumes (encrypted gp3 from the root module)."
}

variable "resources" {
  type = object({
    cpu    = string
    memory = string
  })
  description = "Requests of each Qdrant node; the memory request is also its limit (vectors live in memory)."
  default     = { cpu = "1", memory = "4Gi" }

  validation {
    condition     = trimspace(var.resources.cpu) != "" && trimspace(var.resources.memory) != ""
    error_message = "resources.cpu and resources.memory must be set."
  }
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of the API key's Secrets Manager entry."
}
