# What the worker, the ingress, the manifests and the operators need from the module.

output "event_bus_name" {
  description = "Name of the custom bus (the ingress publishes here; partner buses forward here)."
  value       = aws_cloudwatch_event_bus.this.name
}

output "event_bus_arn" {
  description = "ARN of the custom bus."
  value       = aws_cloudwatch_event_bus.this.arn
}

output "archive_arn" {
  description = "ARN of the bus archive (source of StartReplay)."
  value       = aws_cloudwatch_event_archive.this.arn
}

output "partner_event_bus_names" {
  description = "Partner event buses attached to Stripe event destinations."
  value       = [for b in aws_cloudwatch_event_bus.partner : b.name]
}

output "queue_urls" {
  description = "Domain queue URLs by domain (KEDA ScaledObjects' queueURL)."
  value       = { for d in local.domains : d => aws_sqs_queue.main[d].id }
}

output "queue_arns" {
  description = "Domain queue ARNs by domain."
  value       = { for d in local.domains : d => aws_sqs_queue.main[d].arn }
}

output "dlq_urls" {
  description = "Dead-letter queue URLs by domain."
  value       = { for d in local.domains : d => aws_sqs_queue.dlq[d].id }
}

output "dlq_arns" {
  description = "Dead-letter queue ARNs by domain."
  value       = { for d in local.domains : d => aws_sqs_queue.dlq[d].arn }
}

output "dedupe_table_name" {
  description = "Name of the dedupe table."
  value       = aws_dynamodb_table.dedupe.name
}

output "state_table_name" {
  description = "Name of the billing state table."
  value       = aws_dynamodb_table.state.name
}

output "kms_key_arn" {
  description = "ARN of the module's KMS key (queues, tables, secrets, event log)."
  value       = aws_kms_key.this.arn
}

output "event_log_group_name" {
  description = "Log group receiving every event on the bus."
  value       = aws_cloudwatch_log_group.events.name
}

output "worker_policy_arn" {
  description = "IAM policy of the worker."
  value       = aws_iam_policy.worker.arn
}

output "ingress_policy_arn" {
  description = "IAM policy of the webhook ingress."
  value       = aws_iam_policy.ingress.arn
}

output "api_policy_arn" {
  description = "IAM policy of the read API (serve-api): read the state table and its indexes."
  value       = aws_iam_policy.api.arn
}

output "operator_policy_arn" {
  description = "IAM policy for operators (replay, DLQ redrive): attach it to their role or group."
  value       = aws_iam_policy.operator.arn
}

output "worker_irsa_role_arn" {
  description = "IRSA role of the worker service account (the eks.amazonaws.com/role-arn annotation); null without eks_oidc_provider_arn."
  value       = try(aws_iam_role.irsa["worker"].arn, null)
}

output "ingress_irsa_role_arn" {
  description = "IRSA role of the ingress service account; null without eks_oidc_provider_arn."
  value       = try(aws_iam_role.irsa["ingress"].arn, null)
}

output "api_irsa_role_arn" {
  description = "IRSA role of the read API service account; null without eks_oidc_provider_arn."
  value       = try(aws_iam_role.irsa["api"].arn, null)
}

output "ecs_worker_task_role_arn" {
  description = "ECS task role of the worker (taskRoleArn); null unless create_ecs_roles."
  value       = try(aws_iam_role.ecs_task["worker"].arn, null)
}

output "ecs_ingress_task_role_arn" {
  description = "ECS task role of the ingress; null unless create_ecs_roles."
  value       = try(aws_iam_role.ecs_task["ingress"].arn, null)
}

output "ecs_api_task_role_arn" {
  description = "ECS task role of the read API; null unless create_ecs_roles."
  value       = try(aws_iam_role.ecs_task["api"].arn, null)
}

output "ecs_execution_role_arn" {
  description = "ECS task execution role (executionRoleArn); null unless create_ecs_roles."
  value       = try(aws_iam_role.ecs_execution[0].arn, null)
}

output "webhook_secret_arns" {
  description = "Secrets Manager ARNs of the tenants' webhook signing secrets, by tenant."
  value       = { for t, s in aws_secretsmanager_secret.webhook : t => s.arn }
}

output "api_key_secret_arns" {
  description = "Secrets Manager ARNs of the tenants' Stripe API restricted keys, by tenant."
  value       = { for t, s in aws_secretsmanager_secret.api_key : t => s.arn }
}

output "keda_scaler_role_arn" {
  description = "Role for KEDA's TriggerAuthentication (podIdentity.roleArn); null without keda_operator_role_arn."
  value       = try(aws_iam_role.keda_scaler[0].arn, null)
}

output "delivery_dlq_url" {
  description = "URL of the queue holding events EventBridge could not deliver to a domain queue (or, for partner buses, to the custom bus) after its retries."
  value       = aws_sqs_queue.delivery_dlq.id
}

output "otel_log_group_name" {
  description = "CloudWatch Logs group of the collector sidecars' embedded metrics: EMF_LOG_GROUP of the sidecars."
  value       = aws_cloudwatch_log_group.otel.name
}

output "otel_collector_policy_arn" {
  description = "IAM policy of the collector sidecar (attached to the IRSA and ECS task roles the module creates; attach it to your own roles otherwise)."
  value       = aws_iam_policy.otel_collector.arn
}

output "otel_collector_config_parameter_arn" {
  description = "SSM parameter holding the collector's configuration for ECS (OTEL_COLLECTOR_CONFIG_PARAMETER_ARN of the task definitions); null without create_ecs_roles."
  value       = var.create_ecs_roles ? aws_ssm_parameter.otel_collector_config[0].arn : null
}
