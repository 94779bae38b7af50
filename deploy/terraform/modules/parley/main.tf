# The five Parley releases from the charts in deploy/helm, wired to the stores. Each service's
# secrets are read from Secrets Manager and written into one Kubernetes Secret per service,
# which its chart references by name (existingSecret): no secret value passes through chart
# values or a file.

locals {
  services = toset(["gateway", "conversation", "llm-router", "retrieval", "ingest"])

  postgres = jsondecode(data.aws_secretsmanager_secret_version.postgres.secret_string)
  # ssl=require: RDS refuses unencrypted connections (rds.force_ssl).
  database_url = format(
    "postgresql://%s:%s@%s:%d/%s?ssl=require",
    urlencode(local.postgres.username), urlencode(local.postgres.password),
    var.postgres.address, var.postgres.port, var.postgres.database,
  )
  # rediss: TLS, as ElastiCache requires; the server certificate is publicly trusted.
  redis_url = format(
    "rediss://:%s@%s:%d/0",
    urlencode(data.aws_secretsmanager_secret_version.redis.secret_string), var.redis.host, var.redis.port,
  )
  # Optional secrets are lists of zero or one: merging them adds nothing when absent.
  provider_keys  = merge([for secret in data.aws_secretsmanager_secret_version.provider_keys : jsondecode(secret.secret_string)]...)
  embeddings_key = merge([for secret in data.aws_secretsmanager_secret_version.embeddings : { EMBEDDINGS_API_KEY = secret.secret_string }]...)

  secrets = {
    gateway      = { AUTH_SECRET = aws_secretsmanager_secret_version.auth.secret_string, DATABASE_URL = local.database_url, REDIS_URL = local.redis_url }
    conversation = { DATABASE_URL = local.database_url }
    ingest       = { DATABASE_URL = local.database_url }
    llm-router   = merge(local.provider_keys, { DATABASE_URL = local.database_url, REDIS_URL = local.redis_url })
    retrieval    = merge({ QDRANT_API_KEY = data.aws_secretsmanager_secret_version.qdrant.secret_string }, local.embeddings_key)
  }

  # Template variables are JSON: valid YAML flow values whatever they hold.
  common_values = {
    image_registry   = var.image_registry
    image_tag        = var.image_tag
    otel_endpoint    = var.observability == null ? "" : var.observability.otlp_endpoint
    service_monitors = var.observability == null ? false : var.observability.service_monitors
    metrics_scrapers = var.observability == null ? [] : [{ namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.observability.namespace } } }]
    collector_peers  = var.observability == null ? [] : [{ namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.observability.namespace } } }]
    store_peers      = [{ ipBlock = { cidr = var.vpc_cidr_block } }]
    qdrant_peers     = var.qdrant.network_peers.to
    qdrant_ports     = var.qdrant.network_peers.ports
  }

  # Settings of one service that come from the infrastructure (not secrets).
  service_config = {
    retrieval = { QDRANT_URL = var.qdrant.url }
  }

  service_values = {
    for service in local.services : service => {
      secret_name = kubernetes_secret_v1.service[service].metadata[0].name
      # A changed secret rolls the pods, which read it at start only. The digest of
      # high-entropy values reveals nothing of them.
      pod_annotations = { "checksum/secret" = nonsensitive(sha256(jsonencode(local.secrets[service]))) }
      autoscaling = try({
        minReplicas = var.autoscaling[service].min_replicas
        maxReplicas = var.autoscaling[service].max_replicas
      }, {})
      config = try(local.service_config[service], {})
    }
  }

  own_values = {
    gateway = {
      ingress = {
        enabled       = var.gateway_ingress != null
        host          = try(var.gateway_ingress.host, "")
        className     = try(var.gateway_ingress.class_name, "nginx")
        tlsSecretName = try(var.gateway_ingress.tls_secret_name, "")
        annotations   = try(var.gateway_ingress.annotations, {})
      }
      ingress_from = [{ namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.ingress_controller_namespace } } }]
    }
    llm-router = {
      # null (no routes file) fails to decode: the chart's default, routes from the keys.
      routes = try(yamldecode(var.llm_router_routes), {})
    }
  }
}

data "aws_secretsmanager_secret_version" "postgres" {
  secret_id = var.postgres.master_secret_arn
}

# A version made in this apply is read once the store accepts it (the version id is unknown
# until then), so a rotated token or key reaches the services in the same apply.
data "aws_secretsmanager_secret_version" "redis" {
  secret_id  = var.redis.auth_token_secret_arn
  version_id = var.redis.auth_token_version_id
}

data "aws_secretsmanager_secret_version" "qdrant" {
  secret_id  = var.qdrant.api_key_secret_arn
  version_id = var.qdrant.api_key_version_id
}

data "aws_secretsmanager_secret_version" "provider_keys" {
  count     = var.provider_keys_secret_arn == null ? 0 : 1
  secret_id = var.provider_keys_secret_arn
}

data "aws_secretsmanager_secret_version" "embeddings" {
  count     = var.embeddings_api_key_secret_arn == null ? 0 : 1
  secret_id = var.embeddings_api_key_secret_arn
}

# The bearer tokens' signing key: operators read it from Secrets Manager to issue tokens
# (parley-gateway token).
resource "random_password" "auth" {
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "auth" {
  #checkov:skip=CKV2_AWS_57:Rotating the signing key invalidates every issued token; it is a deliberate step (README), not a schedule.
  name_prefix = "${var.name}/gateway-auth-secret-"
  description = "AUTH_SECRET of the Parley gateway (HS256 key of bearer tokens)"
  kms_key_id  = var.kms_key_arn
}

resource "aws_secretsmanager_secret_version" "auth" {
  secret_id     = aws_secretsmanager_secret.auth.id
  secret_string = random_password.auth.result
}

# The charts' pods meet the restricted Pod Security Standard: anything less is refused.
resource "kubernetes_namespace_v1" "parley" {
  metadata {
    name = var.namespace
    labels = {
      "pod-security.kubernetes.io/enforce" = "restricted"
      "pod-security.kubernetes.io/warn"    = "restricted"
    }
  }
}

resource "kubernetes_secret_v1" "service" {
  for_each = local.services

  metadata {
    name      = "parley-${each.key}"
    namespace = kubernetes_namespace_v1.parley.metadata[0].name
    labels    = { "app.kubernetes.io/part-of" = "parley", "app.kubernetes.io/managed-by" = "terraform" }
  }

  data = local.secrets[each.key]

  lifecycle {
    precondition {
      condition     = alltrue([for key in keys(local.secrets[each.key]) : can(regex("^[A-Z][A-Z0-9_]*$", key))])
      error_message = "Every key of ${each.key}'s secret becomes an environment variable: it must match ^[A-Z][A-Z0-9_]*$ (check the provider keys secret)."
    }
  }
}

resource "helm_release" "service" {
  for_each = local.services

  name      = "parley-${each.key}"
  namespace = kubernetes_namespace_v1.parley.metadata[0].name
  chart     = "${path.module}/../../../helm/${each.key}"
  # The charts share templates through the parley-lib library chart (file://../parley-lib).
  dependency_update = true
  # Long enough for the migration hook and a rolling update of pods that drain for minutes.
  timeout         = 1200
  atomic          = true
  cleanup_on_fail = true

  values = compact([
    templatefile("${path.module}/values/common.yaml.tftpl", { for key, value in local.common_values : key => jsonencode(value) }),
    templatefile("${path.module}/values/service.yaml.tftpl", { for key, value in local.service_values[each.key] : key => jsonencode(value) }),
    contains(keys(local.own_values), each.key) ? templatefile("${path.module}/values/${each.key}.yaml.tftpl", { for key, value in local.own_values[each.key] : key => jsonencode(value) }) : "",
    lookup(var.extra_values, each.key, ""),
  ])
}
