# Traces: services -> OpenTelemetry Collector -> Tempo. Metrics: Prometheus (operator from
# kube-prometheus-stack) scrapes the services' ServiceMonitors. Grafana reads both.

locals {
  collector = "otel-collector"
  tempo     = "tempo"
  # kube-prometheus-stack names its Prometheus Service <fullname>-prometheus.
  prometheus_url = "http://kps-prometheus.${var.namespace}.svc.cluster.local:9090"
  tempo_url      = "http://${local.tempo}.${var.namespace}.svc.cluster.local:3200"
}

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = var.namespace
  }
}

resource "helm_release" "kube_prometheus_stack" {
  name       = "kube-prometheus-stack"
  namespace  = kubernetes_namespace_v1.this.metadata[0].name
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "kube-prometheus-stack"
  version    = var.chart_versions.kube_prometheus_stack
  timeout    = 900

  values = [yamlencode({
    fullnameOverride = "kps"
    # Grafana is a release of its own below.
    grafana = { enabled = false }
    prometheus = {
      prometheusSpec = {
        retention = var.prometheus_retention
        # Pick up every ServiceMonitor and rule, not only those labelled for this release:
        # the Parley charts bring their own.
        serviceMonitorSelectorNilUsesHelmValues = false
        podMonitorSelectorNilUsesHelmValues     = false
        ruleSelectorNilUsesHelmValues           = false
        storageSpec = {
          volumeClaimTemplate = {
            spec = {
              storageClassName = var.storage_class
              accessModes      = ["ReadWriteOnce"]
              resources        = { requests = { storage = var.prometheus_storage_size } }
            }
          }
        }
      }
    }
  })]
}

resource "helm_release" "tempo" {
  name       = local.tempo
  namespace  = kubernetes_namespace_v1.this.metadata[0].name
  repository = "https://grafana.github.io/helm-charts"
  chart      = "tempo"
  version    = var.chart_versions.tempo

  values = [yamlencode({
    tempo = { retention = var.tempo_retention }
    persistence = {
      enabled          = true
      storageClassName = var.storage_class
      size             = var.tempo_storage_size
    }
  })]
}

resource "helm_release" "opentelemetry_collector" {
  name       = local.collector
  namespace  = kubernetes_namespace_v1.this.metadata[0].name
  repository = "https://open-telemetry.github.io/opentelemetry-helm-charts"
  chart      = "opentelemetry-collector"
  version    = var.chart_versions.opentelemetry_collector

  values = [yamlencode({
    fullnameOverride = local.collector
    mode             = "deployment"
    replicaCount     = var.collector_replicas
    image            = { repository = "otel/opentelemetry-collector-contrib" }
    command          = { name = "otelcol-contrib" }
    # memory_limiter takes its ceiling from the memory limit.
    resources = {
      requests = { cpu = "200m", memory = "256Mi" }
      limits   = { memory = "512Mi" }
    }
    podDisruptionBudget = { enabled = var.collector_replicas > 1, maxUnavailable = 1 }
    config = {
      exporters = {
        "otlp/tempo" = {
          endpoint = "${local.tempo}.${var.namespace}.svc.cluster.local:4317"
          tls      = { insecure = true }
        }
      }
      service = {
        pipelines = {
          traces = {
            receivers  = ["otlp"]
            processors = ["memory_limiter", "batch"]
            exporters  = ["otlp/tempo"]
          }
        }
      }
    }
  })]

  depends_on = [helm_release.tempo]
}

resource "random_password" "grafana_admin" {
  length  = 32
  special = false
}

resource "kubernetes_secret_v1" "grafana_admin" {
  metadata {
    name      = "grafana-admin"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }

  data = {
    admin-user     = "admin"
    admin-password = random_password.grafana_admin.result
  }
}

resource "helm_release" "grafana" {
  name       = "grafana"
  namespace  = kubernetes_namespace_v1.this.metadata[0].name
  repository = "https://grafana.github.io/helm-charts"
  chart      = "grafana"
  version    = var.chart_versions.grafana

  values = [yamlencode({
    admin = {
      existingSecret = kubernetes_secret_v1.grafana_admin.metadata[0].name
      userKey        = "admin-user"
      passwordKey    = "admin-password"
    }
    persistence = {
      enabled          = true
      storageClassName = var.storage_class
      size             = "10Gi"
    }
    # Dashboards arrive as ConfigMaps labelled grafana_dashboard, from any namespace.
    sidecar = {
      dashboards = { enabled = true, label = "grafana_dashboard", searchNamespace = "ALL" }
    }
    datasources = {
      "datasources.yaml" = {
        apiVersion = 1
        datasources = [
          { name = "Prometheus", uid = "prometheus", type = "prometheus", url = local.prometheus_url, isDefault = true },
          { name = "Tempo", uid = "tempo", type = "tempo", url = local.tempo_url },
        ]
      }
    }
  })]
}
