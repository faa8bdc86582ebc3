# Shared values: names, the routing patterns, the account context, and the module's
# customer managed KMS key (queues, tables, secrets and the monitoring log group).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  prefix     = var.name_prefix
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  # `id` is the region name in provider 5.x and 6.x alike (6.x deprecates `name`).
  region = data.aws_region.current.id

  # One queue, DLQ and rule per domain; the same three as `stripe_worker::domain::Domain`.
  domains = toset(["subscription", "payment", "customer"])

  # The rules' event patterns, generated from the worker's routing definition by
  # `stripe-worker routes --format json > deploy/routing-patterns.json`, so the cloud rules and
  # the worker's own matcher (and the embedded backend's local bus) can never disagree.
  routing_patterns = jsondecode(file("${path.module}/../routing-patterns.json"))

  partner_sources = var.enable_stripe_partner_events ? toset(var.stripe_partner_event_source_names) : toset([])

  event_log_group_arn = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${var.event_log_group_name}"
  # The ECS tasks' awslogs group (deploy/ecs/terraform) shares the key.
  ecs_log_group_arn = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/ecs/${local.prefix}"
  # The collector sidecars' embedded metrics (collector.tf).
  otel_log_group_name = "/aws/otel/${local.prefix}"
  otel_log_group_arn  = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.otel_log_group_name}"

  oidc_host = var.eks_oidc_provider_url == null ? null : trimprefix(var.eks_oidc_provider_url, "https://")

  alarm_actions = var.alarm_sns_topic_arn == null ? [] : [var.alarm_sns_topic_arn]

  tags = merge({ "app.kubernetes.io/part-of" = "stripe-worker", "stripe-worker/prefix" = local.prefix }, var.tags)
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A KMS key policy is attached to one key: its Resource "*" means that key only, never other resources.
  #checkov:skip=CKV_AWS_356:A KMS key policy is attached to one key: its Resource "*" means that key only, never other resources.
  #checkov:skip=CKV_AWS_109:A KMS key policy must let the account administer the key (else the key becomes unmanageable); Resource "*" means that key only.
  # The account's IAM policies decide who else may use the key (the worker, ingress and
  # operator policies below grant it on this key only).
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # EventBridge encrypts the messages it sends to the domain queues (SSE-KMS).
  statement {
    sid       = "EventBridgeSendsToEncryptedQueues"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  # CloudWatch Logs encrypts the monitoring log group, the ECS tasks' log group and the
  # collector's embedded-metrics group, no other.
  statement {
    sid       = "LogsEncryptsTheEventLogGroup"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = [local.event_log_group_arn, local.ecs_log_group_arn, local.otel_log_group_arn]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${local.prefix}: stripe-worker queues, tables, secrets and event log"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${local.prefix}"
  target_key_id = aws_kms_key.this.key_id
}
