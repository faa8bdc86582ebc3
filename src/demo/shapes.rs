//! The Stripe shapes of the demo's catalogue, discounts, tax ids, entitlements, refunds,
//! disputes, credit notes and subscription schedules (API version
//! [`super::generator::API_VERSION`]): pure builders, so the generator only decides what
//! happens and when.

use serde_json::{Value, json};

/// A product of a tenant's catalogue.
pub(super) fn product(id: &str, tenant: &str, name: &str, price: &str, created: i64) -> Value {
    json!({
        "id": id,
        "object": "product",
        "active": true,
        "created": created,
        "default_price": price,
        "description": null,
        "images": [],
        "livemode": false,
        "marketing_features": [],
        "metadata": {"tenant_id": tenant},
        "name": name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "type": "service",
        "unit_label": null,
        "updated": created,
        "url": null,
    })
}

/// A coupon: `percent_off` for `months` months.
pub(super) fn coupon(id: &str, tenant: &str, percent_off: f64, months: i64, created: i64) -> Value {
    json!({
        "id": id,
        "object": "coupon",
        "amount_off": null,
        "created": created,
        "currency": null,
        "duration": "repeating",
        "duration_in_months": months,
        "livemode": false,
        "max_redemptions": null,
        "metadata": {"tenant_id": tenant},
        "name": format!("{percent_off}% off for {months} months"),
        "percent_off": percent_off,
        "redeem_by": null,
        "times_redeemed": 0,
        "valid": true,
    })
}

/// A promotion code for `coupon` (the coupon embedded, as before 2025-09-30.clover).
pub(super) fn promotion_code(
    id: &str,
    tenant: &str,
    code: &str,
    coupon: &Value,
    created: i64,
) -> Value {
    json!({
        "id": id,
        "object": "promotion_code",
        "active": true,
        "code": code,
        "coupon": coupon,
        "created": created,
        "customer": null,
        "expires_at": null,
        "livemode": false,
        "max_redemptions": null,
        "metadata": {"tenant_id": tenant},
        "restrictions": {
            "first_time_transaction": false,
            "minimum_amount": null,
            "minimum_amount_currency": null,
        },
        "times_redeemed": 0,
    })
}

/// Where a discount applies and what it is made of.
pub(super) struct DiscountOf<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub subscription: &'a str,
    pub coupon: &'a Value,
    pub promotion_code: &'a str,
    pub start: i64,
    pub end: i64,
}

/// A subscription's discount (discounts have no metadata).
pub(super) fn discount(d: &DiscountOf<'_>) -> Value {
    json!({
        "id": d.id,
        "object": "discount",
        "checkout_session": null,
        "coupon": d.coupon,
        "customer": d.customer,
        "end": d.end,
        "invoice": null,
        "invoice_item": null,
        "promotion_code": d.promotion_code,
        "start": d.start,
        "subscription": d.subscription,
        "subscription_item": null,
    })
}

/// A customer's EU VAT id (tax ids have no metadata).
pub(super) fn tax_id(id: &str, customer: &str, value: &str, status: &str, created: i64) -> Value {
    json!({
        "id": id,
        "object": "tax_id",
        "country": "DE",
        "created": created,
        "customer": customer,
        "livemode": false,
        "owner": {"account": null, "application": null, "customer": customer, "type": "customer"},
        "type": "eu_vat",
        "value": value,
        "verification": {"status": status, "verified_address": null, "verified_name": null},
    })
}

/// A customer's active entitlement summary: one active entitlement per feature
/// `(entitlement id, feature id, lookup key)`.
pub(super) fn entitlement_summary(customer: &str, features: &[(String, String, &str)]) -> Value {
    let data: Vec<Value> = features
        .iter()
        .map(|(id, feature, lookup_key)| {
            json!({
                "id": id,
                "object": "entitlements.active_entitlement",
                "feature": feature,
                "livemode": false,
                "lookup_key": lookup_key,
            })
        })
        .collect();
    json!({
        "object": "entitlements.active_entitlement_summary",
        "customer": customer,
        "entitlements": {
            "object": "list",
            "data": data,
            "has_more": false,
            "url": "/v1/entitlements/active_entitlements",
        },
        "livemode": false,
    })
}

/// What a refund or dispute is about: the charge, its payment intent and amount.
pub(super) struct Payment<'a> {
    pub tenant: &'a str,
    pub charge: &'a str,
    pub payment_intent: &'a str,
    pub amount: i64,
}

/// A refund of a whole charge.
pub(super) fn refund(id: &str, p: &Payment<'_>, status: &str, created: i64) -> Value {
    json!({
        "id": id,
        "object": "refund",
        "amount": p.amount,
        "balance_transaction": null,
        "charge": p.charge,
        "created": created,
        "currency": "usd",
        "destination_details": {"card": {"reference_status": "pending", "type": "refund"}, "type": "card"},
        "failure_reason": null,
        "metadata": {"tenant_id": p.tenant},
        "payment_intent": p.payment_intent,
        "reason": "requested_by_customer",
        "receipt_number": null,
        "source_transfer_reversal": null,
        "status": status,
        "transfer_reversal": null,
    })
}

/// A dispute of a whole charge.
pub(super) fn dispute(id: &str, p: &Payment<'_>, status: &str, created: i64) -> Value {
    json!({
        "id": id,
        "object": "dispute",
        "amount": p.amount,
        "balance_transactions": [],
        "charge": p.charge,
        "created": created,
        "currency": "usd",
        "evidence_details": {
            "due_by": created + 21 * 86_400,
            "has_evidence": status != "needs_response",
            "past_due": false,
            "submission_count": i64::from(status != "needs_response"),
        },
        "is_charge_refundable": false,
        "livemode": false,
        "metadata": {"tenant_id": p.tenant},
        "payment_intent": p.payment_intent,
        "reason": "product_not_received",
        "status": status,
    })
}

/// A post-payment credit note refunding a whole invoice.
#[allow(clippy::too_many_arguments)]
pub(super) fn credit_note(
    id: &str,
    tenant: &str,
    number: &str,
    customer: &str,
    invoice: &str,
    refund: &str,
    amount: i64,
    created: i64,
) -> Value {
    json!({
        "id": id,
        "object": "credit_note",
        "amount": amount,
        "amount_shipping": 0,
        "created": created,
        "currency": "usd",
        "customer": customer,
        "customer_balance_transaction": null,
        "discount_amount": 0,
        "discount_amounts": [],
        "effective_at": created,
        "invoice": invoice,
        "lines": {"object": "list", "data": [], "has_more": false,
                  "url": format!("/v1/credit_notes/{id}/lines")},
        "livemode": false,
        "memo": null,
        "metadata": {"tenant_id": tenant},
        "number": number,
        "out_of_band_amount": null,
        "pdf": format!("https://pay.stripe.com/credit_notes/test/{id}/pdf"),
        "post_payment_amount": amount,
        "pre_payment_amount": 0,
        "reason": "product_unsatisfactory",
        "refunds": [{"amount_refunded": amount, "refund": refund, "type": "refund"}],
        "shipping_cost": null,
        "status": "issued",
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "total": amount,
        "total_excluding_tax": amount,
        "type": "post_payment",
        "voided_at": null,
    })
}

/// A schedule made from a subscription: its current phase, then `status`
/// (`active`, or `released` at `released_at`).
pub(super) fn subscription_schedule(
    id: &str,
    tenant: &str,
    customer: &str,
    subscription: &str,
    phase: (i64, i64),
    released_at: Option<i64>,
    created: i64,
) -> Value {
    let released = released_at.is_some();
    json!({
        "id": id,
        "object": "subscription_schedule",
        "application": null,
        "canceled_at": null,
        "completed_at": null,
        "created": created,
        "current_phase": if released { Value::Null } else { json!({"start_date": phase.0, "end_date": phase.1}) },
        "customer": customer,
        "end_behavior": "release",
        "livemode": false,
        "metadata": {"tenant_id": tenant},
        "phases": [{"start_date": phase.0, "end_date": phase.1, "items": [], "proration_behavior": "create_prorations"}],
        "released_at": released_at,
        "released_subscription": if released { Value::String(subscription.to_owned()) } else { Value::Null },
        "status": if released { "released" } else { "active" },
        "subscription": if released { Value::Null } else { Value::String(subscription.to_owned()) },
        "test_clock": null,
    })
}
