# One queue and one dead-letter queue per domain. Only the domain's rule may send to the
# queue; only the queue may redrive into its DLQ.

resource "aws_sqs_queue" "dlq" {
  for_each = local.domains

  name                              = "${local.prefix}-${each.key}-events-dlq"
  message_retention_seconds         = 1209600 # 14 days, the SQS maximum: time to redrive
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = merge(local.tags, { "stripe-worker/domain" = each.key, "stripe-worker/role" = "dlq" })
}

resource "aws_sqs_queue" "main" {
  for_each = local.domains

  name                              = "${local.prefix}-${each.key}-events"
  visibility_timeout_seconds        = var.visibility_timeout_seconds
  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = merge(local.tags, { "stripe-worker/domain" = each.key, "stripe-worker/role" = "queue" })
}

# A separate resource, because the DLQ's allow policy names the queue that names the DLQ.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  for_each = local.domains

  queue_url = aws_sqs_queue.dlq[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.main[each.key].arn]
  })
}

data "aws_iam_policy_document" "queue" {
  for_each = local.domains

  statement {
    sid       = "OnlyTheDomainRuleSends"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.main[each.key].arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.domain[each.key].arn]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.main[each.key].arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "main" {
  for_each = local.domains

  queue_url = aws_sqs_queue.main[each.key].id
  policy    = data.aws_iam_policy_document.queue[each.key].json
}

data "aws_iam_policy_document" "dlq" {
  for_each = local.domains

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.dlq[each.key].arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "dlq" {
  for_each = local.domains

  queue_url = aws_sqs_queue.dlq[each.key].id
  policy    = data.aws_iam_policy_document.dlq[each.key].json
}

# --- Events EventBridge could not deliver ------------------------------------------------

# What a rule target (a domain queue, or the custom bus for a partner bus) still refused
# after EventBridge's retries. The messages are the events themselves, with the error in
# their attributes: after fixing the cause, publish them again (`stripe-worker publish`
# with the bodies as envelopes), or replay the window from the archive.
resource "aws_sqs_queue" "delivery_dlq" {
  name                              = "${local.prefix}-event-delivery-dlq"
  message_retention_seconds         = 1209600 # 14 days, the SQS maximum
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = merge(local.tags, { "stripe-worker/role" = "delivery-dlq" })
}

data "aws_iam_policy_document" "delivery_dlq" {
  statement {
    sid       = "OnlyTheModulesRulesDeadLetter"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.delivery_dlq.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values = concat(
        [for d in local.domains : aws_cloudwatch_event_rule.domain[d].arn],
        [for s in local.partner_sources : aws_cloudwatch_event_rule.partner_forward[s].arn],
      )
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.delivery_dlq.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "delivery_dlq" {
  queue_url = aws_sqs_queue.delivery_dlq.id
  policy    = data.aws_iam_policy_document.delivery_dlq.json
}
