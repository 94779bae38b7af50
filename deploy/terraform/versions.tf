terraform {
  # 1.10: S3 native state locking (use_lockfile); 1.9: validations that read other variables.
  required_version = ">= 1.10, < 2.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.37"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }

  # Partial configuration: the bucket comes from bootstrap/ and the rest from
  # environments/<environment>.s3.tfbackend (see README.md).
  backend "s3" {}
}
