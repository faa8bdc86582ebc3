output "log_group_name" {
  description = "awslogs-group of the task definitions."
  value       = aws_cloudwatch_log_group.tasks.name
}

output "worker_scaling_policy_arns" {
  description = "Backlog-per-task scaling policies by domain."
  value       = { for d, p in aws_appautoscaling_policy.worker_backlog : d => p.arn }
}
