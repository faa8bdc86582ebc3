# The custom bus every Stripe event lands on, the partner buses that forward to it, the
# per-domain rules, the archive and the all-events monitoring rule.

resource "aws_cloudwatch_event_bus" "this" {
  name = "${local.prefix}-event-bus"
  tags = local.tags

  lifecycle {
    precondition {
      condition     = !var.enable_stripe_partner_events || length(var.stripe_partner_event_source_names) > 0
      error_message = "enable_stripe_partner_events is true but stripe_partner_event_source_names is empty: no Stripe event destination would be received. Add the aws.partner/stripe.com/ed_... source names."
    }
  }
}

# Everything that reaches the bus, from either path, is archived before any rule runs, so
# a bad deploy or a lost delivery is recovered with `StartReplay` (see the operator policy).
resource "aws_cloudwatch_event_archive" "this" {
  name             = "${local.prefix}-events-archive"
  description      = "Every Stripe event on ${aws_cloudwatch_event_bus.this.name}, for replay"
  event_source_arn = aws_cloudwatch_event_bus.this.arn
  retention_days   = var.archive_retention_days
}

# --- Stripe event destinations (partner event sources) ---------------------------------

# Associating a partner event source with a bus of the same name activates it. Each
# destination gets its own partner bus; one rule forwards all of it to the custom bus, so
# the domain rules, the archive and the monitoring rule stay in one place.
resource "aws_cloudwatch_event_bus" "partner" {
  for_each = local.partner_sources

  name              = each.value
  event_source_name = each.value
  tags              = local.tags
}

resource "aws_cloudwatch_event_rule" "partner_forward" {
  for_each = local.partner_sources

  name           = "${local.prefix}-partner-fwd-${substr(sha1(each.value), 0, 10)}"
  description    = "Forward every event of ${each.value} to ${aws_cloudwatch_event_bus.this.name}"
  event_bus_name = aws_cloudwatch_event_bus.partner[each.value].name
  event_pattern  = jsonencode({ source = [{ prefix = "aws.partner/stripe.com/" }] })
  tags           = local.tags
}

resource "aws_cloudwatch_event_target" "partner_forward" {
  for_each = local.partner_sources

  rule           = aws_cloudwatch_event_rule.partner_forward[each.value].name
  event_bus_name = aws_cloudwatch_event_bus.partner[each.value].name
  target_id      = "custom-bus"
  arn            = aws_cloudwatch_event_bus.this.arn
  role_arn       = aws_iam_role.partner_forward[0].arn

  # As for the domain targets: retried for a day, then kept in the delivery DLQ.
  retry_policy {
    maximum_event_age_in_seconds = 86400
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.delivery_dlq.arn
  }
}

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]

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
}

data "aws_iam_policy_document" "partner_forward" {
  statement {
    actions   = ["events:PutEvents"]
    resources = [aws_cloudwatch_event_bus.this.arn]
  }
}

resource "aws_iam_role" "partner_forward" {
  count = length(local.partner_sources) > 0 ? 1 : 0

  name               = "${local.prefix}-partner-forward"
  description        = "EventBridge: forward Stripe partner events to ${aws_cloudwatch_event_bus.this.name}"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "partner_forward" {
  count = length(local.partner_sources) > 0 ? 1 : 0

  name   = "put-events-on-custom-bus"
  role   = aws_iam_role.partner_forward[0].id
  policy = data.aws_iam_policy_document.partner_forward.json
}

# --- Domain rules ------------------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "domain" {
  for_each = local.domains

  name           = "${local.prefix}-${each.key}_events-rule"
  description    = "Stripe ${each.key} events (webhook and partner paths) to ${aws_sqs_queue.main[each.key].name}"
  event_bus_name = aws_cloudwatch_event_bus.this.name
  event_pattern  = jsonencode(local.routing_patterns[each.key])
  tags           = local.tags
}

resource "aws_cloudwatch_event_target" "domain" {
  for_each = local.domains

  rule           = aws_cloudwatch_event_rule.domain[each.key].name
  event_bus_name = aws_cloudwatch_event_bus.this.name
  target_id      = "${each.key}-queue"
  arn            = aws_sqs_queue.main[each.key].arn

  # EventBridge retries a failed delivery for up to a day; what still fails goes to the
  # delivery DLQ (with the error in its attributes) instead of being dropped, and shows in
  # the FailedInvocations and delivery-DLQ alarms.
  retry_policy {
    maximum_event_age_in_seconds = 86400
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.delivery_dlq.arn
  }
}

# --- All-events monitoring rule ----------------------------------------------------------

resource "aws_cloudwatch_log_group" "events" {
  name              = var.event_log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

resource "aws_cloudwatch_event_rule" "all_events" {
  name           = "${local.prefix}-all-events-to-logs"
  description    = "Every event on ${aws_cloudwatch_event_bus.this.name} to ${var.event_log_group_name}"
  event_bus_name = aws_cloudwatch_event_bus.this.name
  # An empty prefix matches every source: the rule sees everything the bus sees.
  event_pattern = jsonencode({ source = [{ prefix = "" }] })
  tags          = local.tags
}

resource "aws_cloudwatch_event_target" "all_events" {
  rule           = aws_cloudwatch_event_rule.all_events.name
  event_bus_name = aws_cloudwatch_event_bus.this.name
  target_id      = "event-log-group"
  arn            = aws_cloudwatch_log_group.events.arn
}

# EventBridge writes to a log group through a log resource policy, not a role.
data "aws_iam_policy_document" "events_to_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.events.arn}:*"]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "delivery.logs.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.all_events.arn]
    }
  }
}

resource "aws_cloudwatch_log_resource_policy" "events_to_logs" {
  policy_name     = "${local.prefix}-events-to-logs"
  policy_document = data.aws_iam_policy_document.events_to_logs.json
}
