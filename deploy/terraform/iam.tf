# Least-privilege policies for the four kinds of caller, and the roles that carry them on
# EKS (IRSA) and ECS (task roles).

locals {
  queue_arns = [for d in local.domains : aws_sqs_queue.main[d].arn]
  dlq_arns   = [for d in local.domains : aws_sqs_queue.dlq[d].arn]
  # What an operator may peek at and redrive: the domain DLQs and the queue of events
  # EventBridge could not deliver.
  operator_dlq_arns = concat(local.dlq_arns, [aws_sqs_queue.delivery_dlq.arn])
  table_arns        = [aws_dynamodb_table.dedupe.arn, aws_dynamodb_table.state.arn]

  # The policy each workload's role carries.
  role_policy_arns = {
    worker  = aws_iam_policy.worker.arn
    ingress = aws_iam_policy.ingress.arn
    api     = aws_iam_policy.api.arn
  }
  service_accounts = {
    worker  = var.k8s_worker_service_account
    ingress = var.k8s_ingress_service_account
    api     = var.k8s_api_service_account
  }
}

# --- Policies ----------------------------------------------------------------------------

data "aws_iam_policy_document" "worker" {
  statement {
    sid = "ConsumeDomainQueues"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = local.queue_arns
  }

  # Poison messages go to the DLQ at once, with their reason as message attributes.
  statement {
    sid       = "DeadLetterPoison"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = local.dlq_arns
  }

  statement {
    sid = "DedupeAndState"
    # What the AWS backend calls: conditional puts, deletes and reads, and the customer
    # index query. No Scan: exporting the whole state is an operator's job. An event is
    # applied with TransactWriteItems, which IAM authorises item by item: PutItem for the
    # marker and the state items, ConditionCheckItem for a lease handler's claim.
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:ConditionCheckItem",
      "dynamodb:Query",
    ]
    resources = concat(local.table_arns, ["${aws_dynamodb_table.state.arn}/index/*"])
  }

  statement {
    sid       = "EncryptedQueuesAndTables"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }
}

data "aws_iam_policy_document" "ingress" {
  statement {
    sid       = "PublishVerifiedWebhooks"
    actions   = ["events:PutEvents"]
    resources = [aws_cloudwatch_event_bus.this.arn]
  }

  # /readyz: the bus exists and this role can see it. The ingress touches nothing else.
  statement {
    sid       = "ReadinessCheck"
    actions   = ["events:DescribeEventBus"]
    resources = [aws_cloudwatch_event_bus.this.arn]
  }
}

# `stripe-worker serve-api`: reads the billing state, nothing else. GetItem for one record,
# Query on the indexes (by_customer for a customer's status, by_kind_status for the lists).
data "aws_iam_policy_document" "api" {
  statement {
    sid       = "ReadState"
    actions   = ["dynamodb:GetItem", "dynamodb:Query"]
    resources = [aws_dynamodb_table.state.arn, "${aws_dynamodb_table.state.arn}/index/*"]
  }

  statement {
    sid       = "EncryptedTable"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
}

data "aws_iam_policy_document" "operator" {
  statement {
    sid       = "ReplayFromArchive"
    actions   = ["events:StartReplay", "events:DescribeArchive"]
    resources = [aws_cloudwatch_event_archive.this.arn]
  }

  # A replay is named by the operator; these act on replays of this account and region only.
  statement {
    sid       = "WatchReplays"
    actions   = ["events:DescribeReplay", "events:CancelReplay"]
    resources = ["arn:${local.partition}:events:${local.region}:${local.account_id}:replay/${local.prefix}-*"]
  }

  # A replay puts events back on the bus (its only allowed destination is the archive's
  # bus); `stripe-worker publish` puts hand-made events on it.
  statement {
    sid       = "PublishToBus"
    actions   = ["events:PutEvents"]
    resources = [aws_cloudwatch_event_bus.this.arn]
  }

  # DLQ redrive: a message move task reads the DLQ and sends back to its source queue.
  # `dlq list` and `dlq show` peek: they receive messages and release them at once
  # (ChangeMessageVisibility to 0), else the peeked messages would stay hidden for the
  # visibility timeout. The delivery DLQ is read the same way (`aws sqs receive-message`,
  # deploy/README.md), its events published again after the fix.
  statement {
    sid = "RedriveDeadLetters"
    actions = [
      "sqs:StartMessageMoveTask",
      "sqs:ListMessageMoveTasks",
      "sqs:CancelMessageMoveTask",
      "sqs:ReceiveMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:ListDeadLetterSourceQueues",
    ]
    resources = local.operator_dlq_arns
  }

  # Redrive back to the source queues; also `stripe-worker publish --to-queue`.
  statement {
    sid       = "RedriveTargets"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = local.queue_arns
  }

  # `stripe-worker state export` and `status`: read the billing state.
  statement {
    sid       = "ReadState"
    actions   = ["dynamodb:Scan", "dynamodb:Query", "dynamodb:GetItem", "dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.state.arn, "${aws_dynamodb_table.state.arn}/index/*"]
  }

  statement {
    sid       = "EncryptedQueuesAndTables"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_policy" "worker" {
  name        = "${local.prefix}-worker"
  description = "stripe-worker: consume the domain queues, dead-letter, dedupe and state tables"
  policy      = data.aws_iam_policy_document.worker.json
  tags        = local.tags
}

resource "aws_iam_policy" "ingress" {
  name        = "${local.prefix}-ingress"
  description = "stripe-worker ingest: put verified webhook events on the custom bus"
  policy      = data.aws_iam_policy_document.ingress.json
  tags        = local.tags
}

resource "aws_iam_policy" "api" {
  name        = "${local.prefix}-api"
  description = "stripe-worker serve-api: read the billing state table and its indexes"
  policy      = data.aws_iam_policy_document.api.json
  tags        = local.tags
}

resource "aws_iam_policy" "operator" {
  name        = "${local.prefix}-operator"
  description = "stripe-worker operators: archive replay, DLQ redrive, state export"
  policy      = data.aws_iam_policy_document.operator.json
  tags        = local.tags
}

# --- EKS: IAM roles for service accounts -------------------------------------------------

data "aws_iam_policy_document" "irsa" {
  for_each = var.eks_oidc_provider_arn == null ? {} : local.service_accounts

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = ["system:serviceaccount:${var.k8s_namespace}:${each.value}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each = data.aws_iam_policy_document.irsa

  name               = "${local.prefix}-${each.key}-irsa"
  description        = "stripe-worker ${each.key} on EKS (service account ${var.k8s_namespace}/${local.service_accounts[each.key]})"
  assume_role_policy = each.value.json
  tags               = local.tags

  lifecycle {
    precondition {
      condition     = var.eks_oidc_provider_url != null
      error_message = "eks_oidc_provider_url must be set together with eks_oidc_provider_arn."
    }
  }
}

resource "aws_iam_role_policy_attachment" "irsa" {
  for_each = aws_iam_role.irsa

  role       = each.value.name
  policy_arn = local.role_policy_arns[each.key]
}

# --- ECS: task roles and the task execution role -----------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "ecs_task" {
  for_each = var.create_ecs_roles ? toset(["worker", "ingress", "api"]) : toset([])

  name               = "${local.prefix}-${each.key}-ecs-task"
  description        = "stripe-worker ${each.key} ECS task role"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ecs_task" {
  for_each = aws_iam_role.ecs_task

  role       = each.value.name
  policy_arn = local.role_policy_arns[each.key]
}

# The execution role pulls the image, writes the awslogs stream and reads the tenants'
# secrets into the containers' environment; the application itself never holds it.
data "aws_iam_policy_document" "ecs_execution" {
  statement {
    sid     = "ReadTenantSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = concat(
      [for t in var.tenants : aws_secretsmanager_secret.webhook[t].arn],
      [for t in var.tenants : aws_secretsmanager_secret.api_key[t].arn],
    )
  }

  # The collector sidecar's configuration (collector.tf).
  statement {
    sid       = "ReadCollectorConfig"
    actions   = ["ssm:GetParameters"]
    resources = ["arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter/${local.prefix}/otel-collector/config"]
  }

  statement {
    sid       = "DecryptTenantSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_role" "ecs_execution" {
  count = var.create_ecs_roles ? 1 : 0

  name               = "${local.prefix}-ecs-execution"
  description        = "stripe-worker ECS task execution role (image pull, logs, secrets)"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ecs_execution_managed" {
  count = var.create_ecs_roles ? 1 : 0

  role       = aws_iam_role.ecs_execution[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "ecs_execution_secrets" {
  count = var.create_ecs_roles ? 1 : 0

  name   = "tenant-secrets"
  role   = aws_iam_role.ecs_execution[0].id
  policy = data.aws_iam_policy_document.ecs_execution.json
}

# --- KEDA: read-only queue depth ----------------------------------------------------------

data "aws_iam_policy_document" "keda_assume" {
  count = var.keda_operator_role_arn == null ? 0 : 1

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = [var.keda_operator_role_arn]
    }
  }
}

data "aws_iam_policy_document" "keda_scaler" {
  statement {
    sid       = "ReadQueueDepth"
    actions   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = local.queue_arns
  }
}

resource "aws_iam_role" "keda_scaler" {
  count = var.keda_operator_role_arn == null ? 0 : 1

  name               = "${local.prefix}-keda-scaler"
  description        = "KEDA aws-sqs-queue scaler for the stripe-worker domain queues"
  assume_role_policy = data.aws_iam_policy_document.keda_assume[0].json
  tags               = local.tags
}

resource "aws_iam_role_policy" "keda_scaler" {
  count = var.keda_operator_role_arn == null ? 0 : 1

  name   = "read-queue-depth"
  role   = aws_iam_role.keda_scaler[0].id
  policy = data.aws_iam_policy_document.keda_scaler.json
}
