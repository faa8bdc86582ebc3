# ECS extras for stripe-worker: the tasks' log group and service autoscaling. The services
# themselves (cluster, subnets, load balancer) belong to the caller's ECS stack; they run
# the task definitions in ../*.json.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 7.0"
    }
  }
}
