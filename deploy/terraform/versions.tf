# The module's provider requirements. The caller configures the AWS provider (region,
# credentials, default tags); the module never names an account, region or partition.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.70 is the first release with every argument used here. Nothing used here
      # changed in 6.x (the region comes from data.aws_region's `id`, the same in both).
      version = ">= 5.70, < 7.0"
    }
  }
}
