# The OpenTelemetry collector that runs as a sidecar of every worker and ingress (ECS task
# definitions, EKS pods): its CloudWatch Logs group for the awsemf exporter (the metrics the
# application alarms read), the permissions to write it, and on ECS its configuration.

resource "aws_cloudwatch_log_group" "otel" {
  name              = local.otel_log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

# awsemf writes embedded-metric-format records into its own streams of the group; CloudWatch
# turns them into the metrics of app_metric_namespace. No cloudwatch:PutMetricData needed.
data "aws_iam_policy_document" "otel_collector" {
  statement {
    sid       = "EmbeddedMetricsLogGroup"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
  }

  statement {
    sid       = "EmbeddedMetricsStreams"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [aws_cloudwatch_log_group.otel.arn, "${aws_cloudwatch_log_group.otel.arn}:*"]
  }
}

resource "aws_iam_policy" "otel_collector" {
  name        = "${local.prefix}-otel-collector"
  description = "stripe-worker's OpenTelemetry collector sidecar: write embedded metrics to its log group"
  policy      = data.aws_iam_policy_document.otel_collector.json
  tags        = local.tags
}

# The sidecar shares its pod's or task's role.
resource "aws_iam_role_policy_attachment" "irsa_otel_collector" {
  for_each = aws_iam_role.irsa

  role       = each.value.name
  policy_arn = aws_iam_policy.otel_collector.arn
}

resource "aws_iam_role_policy_attachment" "ecs_task_otel_collector" {
  for_each = aws_iam_role.ecs_task

  role       = each.value.name
  policy_arn = aws_iam_policy.otel_collector.arn
}

# ECS has no config files: the sidecar reads its configuration from this parameter
# (`--config=env:OTEL_COLLECTOR_CONFIG`, the task definitions' `secrets`; the execution role
# may read it and decrypt with the module's key). The comments are left out so that it fits
# the standard tier (4 KB).
resource "aws_ssm_parameter" "otel_collector_config" {
  count = var.create_ecs_roles ? 1 : 0

  name        = "/${local.prefix}/otel-collector/config"
  description = "stripe-worker: the OpenTelemetry collector sidecar's configuration (deploy/otel-collector/config.yaml)"
  type        = "SecureString"
  key_id      = aws_kms_key.this.arn
  tier        = "Standard"
  value = join("\n", [
    for line in split("\n", file("${path.module}/../otel-collector/config.yaml")) : line
    if !startswith(trimspace(line), "#") && trimspace(line) != ""
  ])
  tags = local.tags
}
