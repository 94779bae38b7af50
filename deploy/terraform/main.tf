# Parley on AWS: a VPC, an EKS cluster, RDS PostgreSQL, ElastiCache Redis, Qdrant, the
# observability stack and the five Parley releases. One state per environment (README.md).

locals {
  prefix = "${var.name}-${var.environment}"
}

module "registry" {
  source = "./modules/registry"

  name         = local.prefix
  force_delete = var.environment != "production"
}

module "network" {
  source = "./modules/network"

  name                    = local.prefix
  cidr_block              = var.vpc_cidr
  availability_zones      = var.availability_zones
  single_nat_gateway      = var.single_nat_gateway
  flow_log_retention_days = var.log_retention_days
}

module "cluster" {
  source = "./modules/cluster"

  name                   = local.prefix
  kubernetes_version     = var.kubernetes_version
  subnet_ids             = module.network.private_subnet_ids
  endpoint_public_access = var.cluster_endpoint_public_access
  public_access_cidrs    = var.cluster_public_access_cidrs
  admin_principal_arns   = var.cluster_admin_principal_arns
  node_groups            = var.node_groups
  log_retention_days     = var.log_retention_days
}

module "postgres" {
  source = "./modules/postgres"

  name                       = local.prefix
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.private_subnet_ids
  client_security_group_ids  = [module.cluster.security_group_id]
  instance_class             = var.postgres_instance_class
  allocated_storage_gib      = var.postgres_allocated_storage_gib
  max_allocated_storage_gib  = var.postgres_max_allocated_storage_gib
  multi_az                   = var.postgres_multi_az
  backup_retention_days      = var.postgres_backup_retention_days
  deletion_protection        = var.environment == "production"
  iam_authentication         = var.postgres_iam_authentication
  password_rotation_schedule = var.postgres_password_rotation_schedule
  log_retention_days         = var.log_retention_days
}

module "redis" {
  source = "./modules/redis"

  name                      = local.prefix
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.cluster.security_group_id]
  node_type                 = var.redis_node_type
  node_count                = var.redis_node_count
  log_retention_days        = var.log_retention_days
}

# Volumes of Qdrant, Prometheus, Tempo and Grafana: encrypted gp3, made in the zone of the pod
# that claims them. Retained when their claim is deleted: vectors and metrics outlive a
# mistaken uninstall (README.md, destroy, lists the volumes left behind).
resource "kubernetes_storage_class_v1" "encrypted_gp3" {
  metadata {
    name        = "gp3-encrypted"
    annotations = { "storageclass.kubernetes.io/is-default-class" = "true" }
  }

  storage_provisioner    = "ebs.csi.aws.com"
  volume_binding_mode    = "WaitForFirstConsumer"
  reclaim_policy         = "Retain"
  allow_volume_expansion = true

  parameters = {
    type      = "gp3"
    encrypted = "true"
  }
}

module "qdrant" {
  source = "./modules/qdrant"

  name                        = local.prefix
  external_url                = var.qdrant_external_url
  external_api_key_secret_arn = var.qdrant_external_api_key_secret_arn
  replicas                    = var.qdrant_replicas
  storage_size                = var.qdrant_storage_size
  storage_class               = kubernetes_storage_class_v1.encrypted_gp3.metadata[0].name
  kms_key_arn                 = module.cluster.kms_key_arn
}

module "observability" {
  source = "./modules/observability"
  count  = var.observability_enabled ? 1 : 0

  storage_class        = kubernetes_storage_class_v1.encrypted_gp3.metadata[0].name
  prometheus_retention = var.prometheus_retention
  tempo_retention      = var.tempo_retention
}

module "parley" {
  source = "./modules/parley"

  name           = local.prefix
  image_registry = coalesce(var.image_registry, module.registry.registry)
  image_tag      = var.image_tag
  kms_key_arn    = module.cluster.kms_key_arn
  vpc_cidr_block = module.network.vpc_cidr_block

  postgres = {
    address           = module.postgres.address
    port              = module.postgres.port
    database          = module.postgres.database_name
    master_secret_arn = module.postgres.master_user_secret_arn
  }

  redis = {
    host                  = module.redis.primary_endpoint
    port                  = module.redis.port
    auth_token_secret_arn = module.redis.auth_token_secret_arn
    auth_token_version_id = module.redis.auth_token_version_id
  }

  qdrant = {
    url                = module.qdrant.url
    api_key_secret_arn = module.qdrant.api_key_secret_arn
    api_key_version_id = module.qdrant.api_key_version_id
    network_peers      = module.qdrant.network_peers
  }

  observability = var.observability_enabled ? {
    otlp_endpoint    = module.observability[0].otlp_endpoint
    namespace        = module.observability[0].namespace
    service_monitors = module.observability[0].service_monitors_ready
  } : null

  provider_keys_secret_arn      = var.provider_keys_secret_arn
  embeddings_api_key_secret_arn = var.embeddings_api_key_secret_arn
  llm_router_routes             = var.llm_router_routes_file == null ? null : file("${path.root}/${var.llm_router_routes_file}")
  gateway_ingress               = var.gateway_ingress
  ingress_controller_namespace  = var.ingress_controller_namespace
  autoscaling                   = var.autoscaling
  extra_values                  = var.parley_extra_values
}
