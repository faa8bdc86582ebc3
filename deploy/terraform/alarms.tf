# Alarms per domain (and per partner forward rule), and on the ingress, all to
# alarm_sns_topic_arn. The application metrics (app_metric_namespace) are what the
# collector's awsemf pipeline publishes (deploy/otel-collector/config.yaml); deploy/check.sh
# checks each name and dimension against what the code emits.

locals {
  # The ingress's signature rejection reasons (`reason` label of
  # stripe_worker.ingress.requests, src/ingress/counters.rs).
  signature_reject_reasons = [
    "missing_signature_header",
    "malformed_signature_header",
    "no_v1_signature",
    "no_matching_signature",
    "timestamp_outside_tolerance",
  ]
}

resource "aws_cloudwatch_metric_alarm" "rule_failed_invocations" {
  for_each = local.domains

  alarm_name          = "${local.prefix}-${each.key}-rule-failed-invocations"
  alarm_description   = "EventBridge could not deliver ${each.key} events to ${aws_sqs_queue.main[each.key].name}: check the queue policy and KMS key policy; replay the gap from the archive."
  namespace           = "AWS/Events"
  metric_name         = "FailedInvocations"
  dimensions          = { EventBusName = aws_cloudwatch_event_bus.this.name, RuleName = aws_cloudwatch_event_rule.domain[each.key].name }
  statistic           = "Sum"
  period              = 600
  evaluation_periods  = 1
  threshold           = var.rule_failed_invocations_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "partner_forward_failed_invocations" {
  for_each = local.partner_sources

  alarm_name          = "${local.prefix}-partner-fwd-${substr(sha1(each.value), 0, 10)}-failed-invocations"
  alarm_description   = "EventBridge could not forward events of ${each.value} to ${aws_cloudwatch_event_bus.this.name}: check the forward role."
  namespace           = "AWS/Events"
  metric_name         = "FailedInvocations"
  dimensions          = { EventBusName = aws_cloudwatch_event_bus.partner[each.value].name, RuleName = aws_cloudwatch_event_rule.partner_forward[each.value].name }
  statistic           = "Sum"
  period              = 600
  evaluation_periods  = 1
  threshold           = var.rule_failed_invocations_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "handler_errors" {
  for_each = local.domains

  alarm_name          = "${local.prefix}-${each.key}-handler-errors"
  alarm_description   = "The ${each.key} handlers failed more than ${var.handler_errors_threshold} times in 5 minutes: see the worker logs and the DLQ reasons."
  namespace           = var.app_metric_namespace
  metric_name         = var.handler_errors_metric_name
  dimensions          = { domain = each.key }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.handler_errors_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "processing_time" {
  for_each = local.domains

  alarm_name        = "${local.prefix}-${each.key}-processing-time"
  alarm_description = "The mean processing time of ${each.key} messages is above ${var.processing_time_ratio * 100}% of the ${var.visibility_timeout_seconds}s visibility timeout: messages risk being received twice."
  namespace         = var.app_metric_namespace
  metric_name       = var.processing_time_metric_name
  dimensions        = { domain = each.key }
  # The collector converts the histogram to deltas before awsemf (cumulativetodelta in
  # deploy/otel-collector/config.yaml): each data point's sum and count cover one export
  # interval, so Average is the mean of the period and moves. A cumulative histogram's
  # maximum covers the whole life of the process and would never come back down.
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  threshold           = var.visibility_timeout_seconds * var.processing_time_ratio
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# The ingress answers 5xx (503) only when the bus refused an event after retries: Stripe
# then retries for up to three days, but every such answer is an event not yet delivered.
resource "aws_cloudwatch_metric_alarm" "ingress_5xx" {
  alarm_name          = "${local.prefix}-ingress-5xx"
  alarm_description   = "The ingress answered ${var.ingress_5xx_threshold}+ webhooks with 503 in 5 minutes: the bus refuses events (ingress logs: \"webhook publish failed\"; check events:PutEvents on the ingress role and EventBridge health)."
  namespace           = var.app_metric_namespace
  metric_name         = var.ingress_requests_metric_name
  dimensions          = { status = "503" }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.ingress_5xx_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# A spike of signature rejections: a webhook secret rolled in Stripe and not in the
# ingress (every event of that endpoint is now refused), or someone probing the endpoint.
resource "aws_cloudwatch_metric_alarm" "ingress_signature_rejections" {
  alarm_name          = "${local.prefix}-ingress-signature-rejections"
  alarm_description   = "The ingress refused more than ${var.signature_rejections_threshold} webhooks for their signature in 5 minutes: check that each tenant's webhook secret matches its Stripe endpoint (a rolled secret?), else someone is probing /webhooks/stripe."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.signature_rejections_threshold
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags

  metric_query {
    id          = "rejected"
    expression  = "SUM(METRICS())"
    label       = "webhooks refused for their signature"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = local.signature_reject_reasons

    content {
      id = "r${metric_query.key}"

      metric {
        namespace   = var.app_metric_namespace
        metric_name = var.ingress_requests_metric_name
        dimensions  = { reason = metric_query.value }
        stat        = "Sum"
        period      = 300
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "delivery_dlq_not_empty" {
  alarm_name          = "${local.prefix}-event-delivery-dlq-not-empty"
  alarm_description   = "${aws_sqs_queue.delivery_dlq.name} holds events EventBridge could not deliver to a queue or the bus after a day of retries: read the error attributes, fix, publish them again (deploy/README.md)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.delivery_dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  for_each = local.domains

  alarm_name          = "${local.prefix}-${each.key}-dlq-not-empty"
  alarm_description   = "${aws_sqs_queue.dlq[each.key].name} holds messages: read their reason attributes, fix, then redrive (deploy/README.md)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq[each.key].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "oldest_message_age" {
  for_each = local.domains

  alarm_name          = "${local.prefix}-${each.key}-oldest-message-age"
  alarm_description   = "The oldest message in ${aws_sqs_queue.main[each.key].name} has waited over ${var.oldest_message_age_threshold_seconds}s: the ${each.key} workers are down or not keeping up."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.main[each.key].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.oldest_message_age_threshold_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}
