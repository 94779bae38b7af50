variable "name" {
  type        = string
  description = "Prefix of every resource name, e.g. parley-staging."
}

variable "cidr_block" {
  type        = string
  description = "The VPC's IPv4 range, /16 to /20: private subnets take a sixteenth each, public ones a 256th."

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) >= 16 && tonumber(split("/", var.cidr_block)[1]) <= 20
    error_message = "cidr_block must be an IPv4 CIDR with a prefix from /16 to /20."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Zones the subnets span, named (e.g. eu-west-1a): a fixed set, so a zone AWS adds later never moves a subnet."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 6 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must name 2 to 6 distinct zones (EKS and Multi-AZ RDS need two)."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones (cheaper; egress stops if its zone fails) instead of one per zone."
  default     = false
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days the VPC flow logs are kept in CloudWatch."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}
