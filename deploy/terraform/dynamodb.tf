# The dedupe table (one item per tenant#handler#event id, expiring) and the billing state
# table (one item per tenant and record, newest as-of wins). Key and index names are the
# AWS backend's (src/backend/aws/dynamodb.rs `schema`), the same that `stripe-worker setup`
# creates for tests and local stacks.

resource "aws_dynamodb_table" "dedupe" {
  name                        = "${local.prefix}-dedupe"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "key"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "key"
    type = "S"
  }

  # Epoch seconds, for DynamoDB's sweeper only: claims compare expires_at_ms themselves, so
  # correctness never depends on the sweeper having run.
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
  hash_key                    = "tenant"
  range_key                   = "record"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "tenant"
    type = "S"
  }

  # <kind>#<object id>
  attribute {
    name = "record"
    type = "S"
  }

  # <tenant>#<customer>, only on records that have a customer (a sparse index).
  attribute {
    name = "tenant_customer"
    type = "S"
  }

  # <tenant>#<kind>#<status>, only on records whose document has a status (sparse).
  attribute {
    name = "tenant_kind_status"
    type = "S"
  }

  # The object id.
  attribute {
    name = "id"
    type = "S"
  }

  # A customer's subscriptions and invoices in one query (`status`).
  global_secondary_index {
    name            = "by_customer"
    hash_key        = "tenant_customer"
    range_key       = "record"
    projection_type = "ALL"
  }

  # A tenant's subscriptions by status, in id order, a page at a time (the read API's
  # lists, `serve-api`). Added to an existing table, DynamoDB fills it from the items that
  # have the attribute: records written by an earlier version get it on their next write.
  global_secondary_index {
    name            = "by_kind_status"
    hash_key        = "tenant_kind_status"
    range_key       = "id"
    projection_type = "ALL"
  }

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
