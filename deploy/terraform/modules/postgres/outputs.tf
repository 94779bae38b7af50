output "address" {
  description = "The instance's DNS name (it follows a Multi-AZ failover)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "The PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "The database the services share."
  value       = aws_db_instance.this.db_name
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret RDS keeps the master user's name and password in (JSON: username, password)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}
