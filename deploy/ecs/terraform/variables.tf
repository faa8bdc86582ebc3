variable "name_prefix" {
  description = "The stripe-worker module's name_prefix: queue names and the log group derive from it."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,31}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3 to 33 characters of a-z, 0-9 and -, starting and ending with a letter or digit."
  }
}

variable "cluster_name" {
  description = "ECS cluster running the services. Container Insights must be on: the backlog metric divides by its RunningTaskCount."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.cluster_name))
    error_message = "cluster_name must be a valid ECS cluster name."
  }
}

variable "worker_service_names" {
  description = "ECS service name of each domain's worker (the task definition family <prefix>-worker-<domain>), by domain."
  type        = map(string)

  validation {
    condition     = length(setsubtract(keys(var.worker_service_names), ["subscription", "payment", "customer"])) == 0
    error_message = "worker_service_names keys must be domains: subscription, payment, customer."
  }
}

variable "ingress_service_name" {
  description = "ECS service name of the webhook ingress; null skips its autoscaling."
  type        = string
  default     = null

  validation {
    condition     = var.ingress_service_name == null || can(regex("^[A-Za-z0-9_-]{1,255}$", var.ingress_service_name))
    error_message = "ingress_service_name must be a valid ECS service name or null."
  }
}

variable "worker_min_tasks" {
  description = "Fewest worker tasks per domain. At least 1: the backlog-per-task expression divides by the running task count."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_min_tasks >= 1
    error_message = "worker_min_tasks must be >= 1."
  }
}

variable "worker_max_tasks" {
  description = "Most worker tasks per domain."
  type        = number
  default     = 10

  validation {
    condition     = var.worker_max_tasks >= 1
    error_message = "worker_max_tasks must be >= 1."
  }
}

variable "target_backlog_per_task" {
  description = "Messages (visible plus in flight) one worker task should have in front of it; target tracking adds or removes tasks to hold it. About what one task finishes in a few seconds at its max_in_flight_per_queue."
  type        = number
  default     = 100

  validation {
    condition     = var.target_backlog_per_task > 0
    error_message = "target_backlog_per_task must be > 0."
  }
}

variable "ingress_min_tasks" {
  description = "Fewest ingress tasks (keep 2 or more: Stripe retries, but a single task is a single point of failure)."
  type        = number
  default     = 2

  validation {
    condition     = var.ingress_min_tasks >= 1
    error_message = "ingress_min_tasks must be >= 1."
  }
}

variable "ingress_max_tasks" {
  description = "Most ingress tasks."
  type        = number
  default     = 6

  validation {
    condition     = var.ingress_max_tasks >= 1
    error_message = "ingress_max_tasks must be >= 1."
  }
}

variable "ingress_target_cpu_percent" {
  description = "Average CPU utilisation the ingress service is scaled to hold."
  type        = number
  default     = 60

  validation {
    condition     = var.ingress_target_cpu_percent > 0 && var.ingress_target_cpu_percent <= 100
    error_message = "ingress_target_cpu_percent must be in (0, 100]."
  }
}

variable "kms_key_arn" {
  description = "KMS key for the tasks' log group: the stripe-worker module's kms_key_arn output, whose key policy admits CloudWatch Logs for /ecs/<name_prefix>."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "log_retention_days" {
  description = "Retention of the tasks' log group (days)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}
