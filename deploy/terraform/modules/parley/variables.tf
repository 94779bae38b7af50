variable "name" {
  type        = string
  description = "Prefix of the Secrets Manager entries this module makes, e.g. parley-staging."
}

variable "namespace" {
  type        = string
  description = "Namespace of the five releases."
  default     = "parley"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.namespace)) && length(var.namespace) <= 63
    error_message = "namespace must be a DNS label."
  }
}

variable "image_registry" {
  type        = string
  description = "Registry and path the parley-<service> images are pulled from, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/parley."

  validation {
    condition     = trimspace(var.image_registry) != ""
    error_message = "image_registry must not be empty."
  }
}

variable "image_tag" {
  type        = string
  description = "Tag of the five images (one Parley version)."

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid image tag."
  }
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of the Secrets Manager entry this module makes (the gateway's AUTH_SECRET)."
}

variable "vpc_cidr_block" {
  type        = string
  description = "The VPC's range: PostgreSQL and Redis are inside it, and the services' egress to them is limited to it."

  validation {
    condition     = can(cidrhost(var.vpc_cidr_block, 0))
    error_message = "vpc_cidr_block must be a CIDR."
  }
}

variable "postgres" {
  type = object({
    address           = string
    port              = number
    database          = string
    master_secret_arn = string
  })
  description = "The PostgreSQL instance of conversation, ingest and llm-router, and the Secrets Manager secret of its credentials."
}

variable "redis" {
  type = object({
    host                  = string
    port                  = number
    auth_token_secret_arn = string
    auth_token_version_id = optional(string)
  })
  description = "llm-router's Redis (TLS), and the Secrets Manager secret of its AUTH token with the version to use (null: the current one)."
}

variable "qdrant" {
  type = object({
    url                = string
    api_key_secret_arn = string
    api_key_version_id = optional(string)
    network_peers      = object({ to = list(any), ports = list(number) })
  })
  description = "retrieval's Qdrant: URL, Secrets Manager secret of its API key with the version to use (null: the current one), and where egress to it may go."
}

variable "observability" {
  type = object({
    otlp_endpoint    = string
    namespace        = string
    service_monitors = bool
  })
  description = "The collector's OTLP endpoint, the namespace allowed to scrape metrics and send traces to, and whether ServiceMonitors are made. Null: tracing off, no scrapes."
  default     = null
}

variable "provider_keys_secret_arn" {
  type        = string
  description = "Secrets Manager secret (JSON object, e.g. {\"OPENAI_API_KEY\": \"...\", \"ANTHROPIC_API_KEY\": \"...\"}) whose keys become llm-router environment variables. Null: no provider keys (the offline local provider answers)."
  default     = null

  validation {
    condition     = var.provider_keys_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.provider_keys_secret_arn))
    error_message = "provider_keys_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "embeddings_api_key_secret_arn" {
  type        = string
  description = "Secrets Manager secret (a plain string) with EMBEDDINGS_API_KEY for retrieval's remote embeddings; null for the local model."
  default     = null

  validation {
    condition     = var.embeddings_api_key_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.embeddings_api_key_secret_arn))
    error_message = "embeddings_api_key_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "llm_router_routes" {
  type        = string
  description = "llm-router's routes file (YAML, services/llm-router/README.md); null: routes from the provider keys."
  default     = null

  validation {
    condition     = var.llm_router_routes == null || can(yamldecode(var.llm_router_routes))
    error_message = "llm_router_routes must be YAML."
  }
}

variable "gateway_ingress" {
  type = object({
    host            = string
    class_name      = optional(string, "nginx")
    tls_secret_name = optional(string, "")
    annotations     = optional(map(string), {})
  })
  description = "The gateway's Ingress (an ingress controller must be installed); null: no Ingress, the gateway is reachable inside the cluster only."
  default     = null

  validation {
    condition     = var.gateway_ingress == null || can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", var.gateway_ingress.host))
    error_message = "gateway_ingress.host must be a DNS name."
  }
}

variable "ingress_controller_namespace" {
  type        = string
  description = "Namespace of the ingress controller (or Gateway) pods: the only source the gateway's NetworkPolicy admits from outside Parley."
  default     = "ingress-nginx"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.ingress_controller_namespace))
    error_message = "ingress_controller_namespace must be a DNS label."
  }
}

variable "autoscaling" {
  type = map(object({
    min_replicas = number
    max_replicas = number
  }))
  description = "Replica bounds of each service's HorizontalPodAutoscaler, by service; services left out keep their chart's."
  default     = {}

  validation {
    condition     = alltrue([for service in keys(var.autoscaling) : contains(["gateway", "conversation", "llm-router", "retrieval", "ingest"], service)])
    error_message = "autoscaling keys must be Parley services: gateway, conversation, llm-router, retrieval, ingest."
  }

  validation {
    condition     = alltrue([for bounds in values(var.autoscaling) : bounds.min_replicas > 0 && bounds.min_replicas <= bounds.max_replicas])
    error_message = "Every service needs 0 < min_replicas <= max_replicas."
  }
}

variable "extra_values" {
  type        = map(string)
  description = "More chart values (YAML) by service, applied last, e.g. config: {EMBEDDINGS_PROVIDER: openai}."
  default     = {}

  validation {
    condition     = alltrue([for service, values in var.extra_values : contains(["gateway", "conversation", "llm-router", "retrieval", "ingest"], service) && can(yamldecode(values))])
    error_message = "extra_values keys must be Parley services and each value YAML."
  }
}
