output "registry" {
  description = "The image registry path for the charts (global.image.registry): <account>.dkr.ecr.<region>.amazonaws.com/<name>."
  value       = "${split("/", values(aws_ecr_repository.service)[0].repository_url)[0]}/${var.name}"
}

output "repository_urls" {
  description = "Repository URL of each service's image, to tag and push to."
  value       = { for service, repository in aws_ecr_repository.service : service => repository.repository_url }
}
