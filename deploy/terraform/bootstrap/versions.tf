# The state bucket cannot hold its own state before it exists: this configuration keeps a local
# state (commit nothing of it; see ../README.md for moving it into the bucket afterwards).
terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = { Project = "parley", Purpose = "terraform-state" }
  }
}
