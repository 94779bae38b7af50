variable "region" {
  type        = string
  description = "AWS region of the state bucket (the same as the environments', for latency and residency)."

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name like eu-west-1."
  }
}

variable "bucket_name" {
  type        = string
  description = "Name of the state bucket; globally unique, e.g. parley-terraform-state-<account id>."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3 to 63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days a superseded state version is kept before it expires (each apply makes one)."
  default     = 365

  validation {
    condition     = var.noncurrent_version_days > 0
    error_message = "noncurrent_version_days must be positive."
  }
}
