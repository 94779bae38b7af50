# The connection outputs wait for the nodes and add-ons, so the Kubernetes and Helm providers
# configured from them only act on a cluster that can run pods.

output "name" {
  description = "The cluster's name."
  value       = aws_eks_cluster.this.name
  depends_on  = [aws_eks_node_group.this, aws_eks_addon.coredns, aws_eks_addon.ebs_csi, aws_eks_addon.vpc_cni]
}

output "endpoint" {
  description = "The API server's URL."
  value       = aws_eks_cluster.this.endpoint
  depends_on  = [aws_eks_node_group.this, aws_eks_addon.coredns, aws_eks_addon.ebs_csi, aws_eks_addon.vpc_cni]
}

output "certificate_authority" {
  description = "The API server's CA certificate, base64-encoded PEM."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "security_group_id" {
  description = "The cluster security group: managed nodes and their pods carry it, so stores admit it."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "kms_key_arn" {
  description = "The cluster's KMS key, also used for the Secrets Manager entries of in-cluster services."
  value       = aws_kms_key.cluster.arn
}
