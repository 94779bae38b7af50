variable "name" {
  type        = string
  description = "Path prefix of the repositories: <name>/parley-<service>."

  validation {
    condition     = can(regex("^[a-z0-9]+([._-][a-z0-9]+)*$", var.name))
    error_message = "name must be a lowercase ECR path segment."
  }
}

variable "services" {
  type        = set(string)
  description = "The services that get a repository (parley-<service>)."
  default     = ["gateway", "conversation", "llm-router", "retrieval", "ingest"]

  validation {
    condition     = length(var.services) > 0
    error_message = "services must name at least one service."
  }
}

variable "keep_images" {
  type        = number
  description = "Images kept per repository; older ones expire (a rollback needs the previous few)."
  default     = 30

  validation {
    condition     = var.keep_images > 0
    error_message = "keep_images must be positive."
  }
}

variable "force_delete" {
  type        = bool
  description = "Let a destroy delete repositories that still hold images (staging); off, they must be emptied first."
  default     = false
}
