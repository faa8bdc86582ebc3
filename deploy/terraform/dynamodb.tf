# The dedupe table (one item per tenant#handler#event id, expiring) and the billing state
# table (one item per object version, newest as-of wins).

resource "aws_dynamodb_table" "dedupe" {
  name                        = "${local.prefix}-dedupe"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "key"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "key"
    type = "S"
  }

  # Applied events are remembered for the worker's dedupe retention_days, then expire.
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.this.arn
  }

  tags = local.tags
}

resource "aws_dynamodb_table" "state" {
  name                        = "${local.prefix}-state"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  attribute {
    name = "customer_pk"
    type = "S"
  }

  # A customer's subscriptions and invoices in one query (`status`).
  global_secondary_index {
    name            = "customer-index"
    hash_key        = "customer_pk"
    range_key       = "sk"
    projection_type = "ALL"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.this.arn
  }

  tags = local.tags
}
