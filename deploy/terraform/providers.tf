provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Project     = "parley"
      Environment = var.environment
      ManagedBy   = "terraform"
    })
  }
}

# Both providers log in with a short-lived EKS token from the AWS CLI, as the identity that
# runs Terraform (the cluster's creator, or one of cluster_admin_principal_arns).
provider "kubernetes" {
  host                   = module.cluster.endpoint
  cluster_ca_certificate = base64decode(module.cluster.certificate_authority)

  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", module.cluster.name, "--region", var.region]
  }
}

provider "helm" {
  kubernetes {
    host                   = module.cluster.endpoint
    cluster_ca_certificate = base64decode(module.cluster.certificate_authority)

    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.cluster.name, "--region", var.region]
    }
  }
}
