output "state_bucket" {
  description = "Pass to terraform init as -backend-config=\"bucket=...\"."
  value       = aws_s3_bucket.state.id
}

output "state_kms_key_arn" {
  description = "Pass to terraform init as -backend-config=\"kms_key_id=...\", so state objects use the bucket's key."
  value       = aws_kms_key.state.arn
}
