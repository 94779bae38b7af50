variable "namespace" {
  type        = string
  description = "Namespace of the stack; the Parley charts' NetworkPolicies admit scrapes from it and send traces to it."
  default     = "monitoring"
}

variable "storage_class" {
  type        = string
  description = "StorageClass of the Prometheus, Tempo and Grafana volumes."
}

variable "chart_versions" {
  type = object({
    kube_prometheus_stack   = optional(string, "67.8.0")
    grafana                 = optional(string, "10.5.15")
    tempo                   = optional(string, "1.24.4")
    opentelemetry_collector = optional(string, "0.170.0")
  })
  description = "Pinned versions of the vendors' charts."
  default     = {}
}

variable "prometheus_retention" {
  type        = string
  description = "How long Prometheus keeps samples, e.g. 15d."
  default     = "15d"

  validation {
    condition     = can(regex("^[1-9][0-9]*(h|d|w)$", var.prometheus_retention))
    error_message = "prometheus_retention must be a duration in hours, days or weeks, e.g. 15d."
  }
}

variable "prometheus_storage_size" {
  type        = string
  description = "Prometheus volume size, e.g. 50Gi."
  default     = "50Gi"

  validation {
    condition     = can(regex("^[1-9][0-9]*(Gi|Ti)$", var.prometheus_storage_size))
    error_message = "prometheus_storage_size must be a quantity in Gi or Ti, e.g. 50Gi."
  }
}

variable "tempo_retention" {
  type        = string
  description = "How long Tempo keeps traces, e.g. 72h."
  default     = "72h"

  validation {
    condition     = can(regex("^[1-9][0-9]*h$", var.tempo_retention))
    error_message = "tempo_retention must be a duration in hours, e.g. 72h."
  }
}

variable "tempo_storage_size" {
  type        = string
  description = "Tempo volume size, e.g. 20Gi."
  default     = "20Gi"

  validation {
    condition     = can(regex("^[1-9][0-9]*(Gi|Ti)$", var.tempo_storage_size))
    error_message = "tempo_storage_size must be a quantity in Gi or Ti, e.g. 20Gi."
  }
}

variable "collector_replicas" {
  type        = number
  description = "OpenTelemetry Collector replicas (a Deployment behind one Service)."
  default     = 2

  validation {
    condition     = var.collector_replicas > 0
    error_message = "collector_replicas must be at least 1."
  }
}
