# Per-tenant secrets, created empty: an operator puts the values (never Terraform, so they
# stay out of the state file). Webhook secrets hold one or more `whsec_...` values,
# comma-separated while an endpoint secret is being rolled; API keys hold the tenant's
# Stripe restricted key (read access to the objects the worker hydrates).

resource "aws_secretsmanager_secret" "webhook" {
  for_each = toset(var.tenants)

  #checkov:skip=CKV2_AWS_57:Stripe webhook signing secrets are rolled in the Stripe dashboard (Roll secret), which no Secrets Manager rotation Lambda can call; the rotation procedure is in deploy/README.md.
  name                    = "${local.prefix}/stripe-webhook-secret/${each.value}"
  description             = "Stripe webhook signing secret(s) of tenant ${each.value}, comma-separated during a roll"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 7
  tags                    = merge(local.tags, { "stripe-worker/tenant" = each.value })
}

resource "aws_secretsmanager_secret" "api_key" {
  for_each = toset(var.tenants)

  #checkov:skip=CKV2_AWS_57:Stripe restricted keys are created and revoked in the Stripe dashboard, which no Secrets Manager rotation Lambda can call; the rotation procedure is in deploy/README.md.
  name                    = "${local.prefix}/stripe-api-key/${each.value}"
  description             = "Stripe API restricted key of tenant ${each.value}"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 7
  tags                    = merge(local.tags, { "stripe-worker/tenant" = each.value })
}
