# Alarms per domain (and per partner forward rule), all to alarm_sns_topic_arn.

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
  alarm_description = "The longest processing time of ${each.key} messages is above ${var.processing_time_ratio * 100}% of the ${var.visibility_timeout_seconds}s visibility timeout: messages risk being received twice."
  namespace         = var.app_metric_namespace
  metric_name       = var.processing_time_metric_name
  dimensions        = { domain = each.key }
  # awsemf publishes an explicit-bucket histogram as a statistic set (min, max, sum,
  # count): percentiles are not available from it, the maximum is.
  statistic           = "Maximum"
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
