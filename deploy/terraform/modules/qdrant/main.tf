# Qdrant for retrieval: the vendor's chart with persistent volumes, or a managed endpoint.
# Either way the API key sits in Secrets Manager and the module hands on its ARN.

locals {
  internal = var.external_url == null

  network_peers = {
    internal = {
      to = [{
        namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.namespace } }
        podSelector       = { matchLabels = { "app.kubernetes.io/name" = "qdrant" } }
      }]
      ports = [6333, 6334]
    }
    # A managed endpoint's addresses are not known in advance.
    external = {
      to    = [{ ipBlock = { cidr = "0.0.0.0/0" } }]
      ports = [443, 6333, 6334]
    }
  }
}

resource "random_password" "api_key" {
  count = local.internal ? 1 : 0

  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "api_key" {
  count = local.internal ? 1 : 0
  #checkov:skip=CKV2_AWS_57:Qdrant reads its key at start; it is rotated by replacing random_password.api_key (deploy/terraform/README.md).

  name_prefix = "${var.name}/qdrant-api-key-"
  description = "API key of the in-cluster Qdrant"
  kms_key_id  = var.kms_key_arn
}

resource "aws_secretsmanager_secret_version" "api_key" {
  count = local.internal ? 1 : 0

  secret_id     = aws_secretsmanager_secret.api_key[0].id
  secret_string = random_password.api_key[0].result
}

resource "kubernetes_namespace_v1" "qdrant" {
  count = local.internal ? 1 : 0

  metadata {
    name = var.namespace
  }
}

resource "kubernetes_secret_v1" "api_key" {
  count = local.internal ? 1 : 0

  metadata {
    name      = "qdrant-api-key"
    namespace = kubernetes_namespace_v1.qdrant[0].metadata[0].name
  }

  data = {
    api-key = aws_secretsmanager_secret_version.api_key[0].secret_string
  }
}

resource "helm_release" "qdrant" {
  count = local.internal ? 1 : 0

  name       = "qdrant"
  namespace  = kubernetes_namespace_v1.qdrant[0].metadata[0].name
  repository = "https://qdrant.github.io/qdrant-helm"
  chart      = "qdrant"
  version    = var.chart_version
  timeout    = 900

  values = [yamlencode({
    replicaCount = var.replicas
    # The chart copies the key when it renders: a new key must change the values to be read.
    podAnnotations = { "checksum/api-key" = nonsensitive(sha256(random_password.api_key[0].result)) }
    apiKey = {
      valueFrom = {
        secretKeyRef = { name = kubernetes_secret_v1.api_key[0].metadata[0].name, key = "api-key" }
      }
    }
    persistence = {
      size             = var.storage_size
      storageClassName = var.storage_class
    }
    resources = {
      requests = { cpu = var.resources.cpu, memory = var.resources.memory }
      limits   = { memory = var.resources.memory }
    }
    config = {
      cluster = { enabled = var.replicas > 1 }
    }
    podDisruptionBudget = {
      enabled        = var.replicas > 1
      maxUnavailable = 1
    }
    topologySpreadConstraints = [{
      maxSkew           = 1
      topologyKey       = "topology.kubernetes.io/zone"
      whenUnsatisfiable = "ScheduleAnyway"
      labelSelector     = { matchLabels = { "app.kubernetes.io/name" = "qdrant" } }
    }]
  })]
}
