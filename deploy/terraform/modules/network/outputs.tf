output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "The VPC's IPv4 range."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "One private subnet per zone: nodes, pods, PostgreSQL, Redis."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "One public subnet per zone: NAT gateways and internet-facing load balancers."
  value       = aws_subnet.public[*].id
}

output "nat_public_ips" {
  description = "Addresses the cluster's outbound traffic leaves from (for providers' allow lists)."
  value       = aws_eip.nat[*].public_ip
}
