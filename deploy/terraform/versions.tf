# The module's provider requirements. The caller configures the AWS provider (region,
# credentials, default tags); the module never names an account, region or partition.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.70 is the first release with every argument used here; 6.x renamed
      # data.aws_region's `name`, so the module stays on 5.x until it is moved over.
      version = ">= 5.70, < 6.0"
    }
  }
}
