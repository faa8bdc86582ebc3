//! The built-in handlers over the real Stripe object samples in `tests/fixtures/stripe/`:
//! every record kind, routing of event types to handlers, permanent errors on bad objects,
//! and order independence of the records they produce under newest-wins writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};
use stripe_worker::backend::StateRecord;
use stripe_worker::domain::Domain;
use stripe_worker::handlers::{Handler, StateChange, kinds, standard_handlers};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stripe")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The one standard handler that handles `event_type` (exactly one must).
fn handler_for(event_type: &str) -> Arc<dyn Handler> {
    let mut matching: Vec<_> = standard_handlers()
        .into_iter()
        .filter(|h| h.handles(event_type))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{event_type} must have exactly one handler"
    );
    matching.remove(0)
}

/// The single change `event_type` with `object` gives.
fn change(event_type: &str, object: &Value) -> StateChange {
    let mut changes = handler_for(event_type)
        .changes(event_type, object)
        .unwrap_or_else(|e| panic!("{event_type}: {e}"));
    assert_eq!(changes.len(), 1, "{event_type} gives one change");
    changes.remove(0)
}

/// `object` with some fields replaced.
fn with(mut object: Value, fields: Value) -> Value {
    if let (Some(o), Value::Object(f)) = (object.as_object_mut(), fields) {
        o.extend(f);
    }
    object
}

#[test]
fn standard_handlers_cover_every_domain() {
    let handlers = standard_handlers();
    let names: Vec<&str> = handlers.iter().map(|h| h.name()).collect();
    assert_eq!(
        names,
        [
            "subscription",
            "subscription_schedule",
            "catalog",
            "payment",
            "adjustment",
            "customer",
            "customer_terms"
        ]
    );
    let mut domains: Vec<Domain> = handlers.iter().map(|h| h.domain()).collect();
    domains.dedup();
    assert_eq!(domains, Domain::ALL);
}

#[test]
fn event_types_reach_the_right_handler_or_none() {
    let cases = [
        ("customer.subscription.created", Some("subscription")),
        ("customer.subscription.deleted", Some("subscription")),
        ("customer.subscription.trial_will_end", Some("subscription")),
        ("invoice.paid", Some("payment")),
        ("invoice.payment_failed", Some("payment")),
        ("invoice_payment.paid", Some("payment")),
        ("payment_intent.succeeded", Some("payment")),
        ("charge.refunded", Some("payment")),
        ("customer.created", Some("customer")),
        ("customer.deleted", Some("customer")),
        ("payment_method.attached", Some("customer")),
        ("checkout.session.completed", Some("customer")),
        ("checkout.session.async_payment_succeeded", Some("customer")),
        ("setup_intent.succeeded", Some("customer")),
        (
            "subscription_schedule.released",
            Some("subscription_schedule"),
        ),
        ("product.deleted", Some("catalog")),
        ("price.updated", Some("catalog")),
        ("coupon.created", Some("catalog")),
        ("promotion_code.updated", Some("catalog")),
        ("refund.failed", Some("adjustment")),
        ("charge.refund.updated", Some("adjustment")),
        ("charge.dispute.closed", Some("adjustment")),
        ("credit_note.voided", Some("adjustment")),
        ("customer.discount.created", Some("customer_terms")),
        ("customer.tax_id.updated", Some("customer_terms")),
        (
            "entitlements.active_entitlement_summary.updated",
            Some("customer_terms"),
        ),
        // Not state, or objects these handlers do not model.
        ("invoice.upcoming", None),
        ("invoiceitem.created", None),
        ("customer.source.created", None),
        ("checkout.session.expired", None),
        ("setup_intent.created", None),
        ("plan.created", None),
    ];
    for (event_type, expected) in cases {
        let names: Vec<String> = standard_handlers()
            .iter()
            .filter(|h| h.handles(event_type))
            .map(|h| h.name().to_owned())
            .collect();
        let expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
        assert_eq!(names, expected, "{event_type}");
    }
}

#[test]
fn subscription_fixture() {
    let c = change("customer.subscription.updated", &fixture("subscription"));
    assert_eq!(c.kind, kinds::SUBSCRIPTION);
    assert_eq!(c.id, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    assert_eq!(c.customer.as_deref(), Some("cus_QXg1o8vcGmoR32"));
    let d = &c.doc;
    assert_eq!(d["id"], c.id.as_str());
    assert_eq!(d["status"], "active");
    assert_eq!(d["customer"], "cus_QXg1o8vcGmoR32");
    assert_eq!(
        d["items"],
        json!([{"id": "si_QXhVnC2h0Jczwc", "price": "price_1PgafmB7WZ01zgkW6dKueIc5",
                "product": "prod_QXg1hqf4jFNsqG", "quantity": 1}])
    );
    // The fixture has no top-level period: it comes from the item.
    assert_eq!(d["current_period_start"], 1896570518);
    assert_eq!(d["current_period_end"], 976287773);
    assert_eq!(d["cancel_at_period_end"], true);
    assert_eq!(d["canceled_at"], 1234567890);
    assert_eq!(d["trial_end"], 1234567890);
    assert_eq!(d["deleted"], false);

    let deleted = change("customer.subscription.deleted", &fixture("subscription"));
    assert_eq!(deleted.doc["deleted"], true);
}

#[test]
fn subscription_with_expanded_customer_and_every_status() {
    let base = fixture("subscription");
    for status in [
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "canceled",
        "unpaid",
        "paused",
    ] {
        let obj = with(
            base.clone(),
            json!({"status": status, "customer": {"id": "cus_X", "object": "customer"}}),
        );
        let c = change("customer.subscription.updated", &obj);
        assert_eq!(c.doc["status"], status);
        assert_eq!(c.customer.as_deref(), Some("cus_X"));
        // Canceled is final, so it reads as deleted even on an `updated` event.
        assert_eq!(c.doc["deleted"], status == "canceled");
    }
}

#[test]
fn invoice_fixture() {
    let c = change("invoice.finalized", &fixture("invoice"));
    assert_eq!(c.kind, kinds::INVOICE);
    assert_eq!(c.id, "in_1Pgc6tB7WZ01zgkWu9fdqL6I");
    assert_eq!(c.customer.as_deref(), Some("cus_QXg1o8vcGmoR32"));
    let d = &c.doc;
    // From `parent.subscription_details`, not the stale top-level null.
    assert_eq!(d["subscription"], "subscription");
    assert_eq!(d["status"], "draft");
    assert_eq!(d["amount_due"], 1000);
    assert_eq!(d["amount_paid"], 0);
    assert_eq!(d["amount_remaining"], 1000);
    assert_eq!(d["currency"], "usd");
    assert_eq!(d["billing_reason"], "manual");
    assert_eq!(d["attempt_count"], 0);
    assert_eq!(d["deleted"], false);
    assert_eq!(
        change("invoice.deleted", &fixture("invoice")).doc["deleted"],
        true
    );
}

#[test]
fn invoice_payment_fixture() {
    let c = change("invoice_payment.paid", &fixture("invoice_payment"));
    assert_eq!(c.kind, kinds::INVOICE_PAYMENT);
    assert_eq!(c.id, "obj_123");
    assert_eq!(c.customer, None);
    assert_eq!(c.doc["invoice"], "invoice");
    assert_eq!(c.doc["payment_type"], "payment_intent");
    assert_eq!(c.doc["amount_paid"], Value::Null);
    assert_eq!(c.doc["amount_requested"], 1112626247);

    let paid = with(
        fixture("invoice_payment"),
        json!({"status": "paid", "amount_paid": 2900,
               "payment": {"type": "payment_intent", "payment_intent": {"id": "pi_9"}}}),
    );
    let c = change("invoice_payment.paid", &paid);
    assert_eq!(c.doc["payment_intent"], "pi_9");
    assert_eq!(c.doc["status"], "paid");
    assert_eq!(c.doc["amount_paid"], 2900);
}

#[test]
fn payment_intent_fixture() {
    let c = change("payment_intent.payment_failed", &fixture("payment_intent"));
    assert_eq!(c.kind, kinds::PAYMENT_INTENT);
    assert_eq!(c.id, "pi_1PgafyB7WZ01zgkWSjxsAJo3");
    assert_eq!(c.customer, None);
    assert_eq!(c.doc["status"], "requires_payment_method");
    assert_eq!(c.doc["amount"], 1099);
    assert_eq!(c.doc["currency"], "usd");
    // The fixture's error has a type but no code.
    assert_eq!(c.doc["failure_code"], Value::Null);

    let declined = with(
        fixture("payment_intent"),
        json!({"customer": "cus_1",
               "last_payment_error": {"type": "card_error", "code": "card_declined"}}),
    );
    let c = change("payment_intent.payment_failed", &declined);
    assert_eq!(c.doc["failure_code"], "card_declined");
    assert_eq!(c.customer.as_deref(), Some("cus_1"));
}

#[test]
fn charge_fixture() {
    let c = change("charge.succeeded", &fixture("charge"));
    assert_eq!(c.kind, kinds::CHARGE);
    assert_eq!(c.id, "ch_1PgafuB7WZ01zgkWXYmPNZs8");
    let d = &c.doc;
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["amount"], 100);
    assert_eq!(d["amount_refunded"], 0);
    assert_eq!(d["currency"], "usd");
    assert_eq!(d["payment_intent"], Value::Null);
    assert_eq!(d["invoice"], Value::Null);
    assert_eq!(d["failure_code"], Value::Null);

    let failed = with(
        fixture("charge"),
        json!({"status": "failed", "failure_code": "expired_card", "customer": "cus_1",
               "payment_intent": {"id": "pi_1", "object": "payment_intent"}, "invoice": "in_1"}),
    );
    let c = change("charge.failed", &failed);
    assert_eq!(c.doc["failure_code"], "expired_card");
    assert_eq!(c.doc["payment_intent"], "pi_1");
    assert_eq!(c.doc["invoice"], "in_1");
    assert_eq!(c.customer.as_deref(), Some("cus_1"));
}

#[test]
fn customer_fixtures() {
    let c = change("customer.updated", &fixture("customer"));
    assert_eq!(c.kind, kinds::CUSTOMER);
    assert_eq!(c.id, "cus_QXg1o8vcGmoR32");
    assert_eq!(c.customer.as_deref(), Some("cus_QXg1o8vcGmoR32"));
    assert_eq!(c.doc["email"], Value::Null);
    assert_eq!(c.doc["deleted"], false);
    assert_eq!(c.doc["default_payment_method"], Value::Null);

    let with_default = with(
        fixture("customer"),
        json!({"email": "jenny@example.com",
               "invoice_settings": {"default_payment_method": {"id": "pm_1", "object": "payment_method"}}}),
    );
    let c = change("customer.updated", &with_default);
    assert_eq!(c.doc["email"], "jenny@example.com");
    assert_eq!(c.doc["default_payment_method"], "pm_1");

    // The stub the API serves for a deleted customer, seen through any customer event,
    // and the full object of a customer.deleted event, give the same record.
    let stub = change("customer.updated", &fixture("deleted_customer"));
    assert_eq!(stub.doc["deleted"], true);
    let full = change("customer.deleted", &with_default);
    assert_eq!(stub, full);
}

#[test]
fn payment_method_fixture() {
    let c = change("payment_method.detached", &fixture("payment_method"));
    assert_eq!(c.kind, kinds::PAYMENT_METHOD);
    assert_eq!(c.id, "pm_1Pgc75B7WZ01zgkWlHVgdEGJ");
    assert_eq!(c.customer, None);
    assert_eq!(c.doc["customer"], Value::Null);
    assert_eq!(c.doc["attached"], false);
    assert_eq!(c.doc["type"], "card");
    assert_eq!(c.doc["card_last4"], "4242");

    let attached = with(fixture("payment_method"), json!({"customer": "cus_1"}));
    let c = change("payment_method.attached", &attached);
    assert_eq!(c.customer.as_deref(), Some("cus_1"));
    assert_eq!(c.doc["attached"], true);
}

#[test]
fn checkout_session_fixture() {
    let completed = with(
        fixture("checkout_session"),
        json!({"status": "complete", "payment_status": "paid", "customer": "cus_1",
               "subscription": {"id": "sub_1", "object": "subscription"},
               "client_reference_id": "user_42", "mode": "subscription"}),
    );
    let c = change("checkout.session.completed", &completed);
    assert_eq!(c.kind, kinds::CHECKOUT_SESSION);
    assert!(c.id.starts_with("cs_test_"));
    assert_eq!(c.customer.as_deref(), Some("cus_1"));
    assert_eq!(
        (
            &c.doc["subscription"],
            &c.doc["client_reference_id"],
            &c.doc["mode"]
        ),
        (&json!("sub_1"), &json!("user_42"), &json!("subscription"))
    );
    assert_eq!(c.doc["status"], "complete");
    assert_eq!(c.doc["payment_status"], "paid");

    let raw = change(
        "checkout.session.async_payment_succeeded",
        &fixture("checkout_session"),
    );
    assert_eq!(raw.doc["mode"], "payment");
    assert_eq!(raw.doc["subscription"], Value::Null);
}

#[test]
fn setup_intent_fixture() {
    let succeeded = with(
        fixture("setup_intent"),
        json!({"status": "succeeded", "customer": "cus_1", "payment_method": "pm_1"}),
    );
    let c = change("setup_intent.succeeded", &succeeded);
    assert_eq!(c.kind, kinds::SETUP_INTENT);
    assert_eq!(c.id, "seti_1Pgag7B7WZ01zgkWSgwGdb8Z");
    assert_eq!(c.customer.as_deref(), Some("cus_1"));
    assert_eq!(c.doc["payment_method"], "pm_1");
    assert_eq!(c.doc["status"], "succeeded");
}

#[test]
fn the_eventbridge_envelopes_object_is_handled() {
    let envelope = fixture("eventbridge_snapshot_envelope");
    let event = &envelope["detail"];
    let event_type = event["type"].as_str().unwrap_or_default();
    let c = change(event_type, &event["data"]["object"]);
    assert_eq!((c.kind.as_str(), c.id.as_str()), ("customer", "cus_123"));
}

/// One event type and fixture per kind.
fn one_per_kind() -> Vec<(&'static str, Value)> {
    vec![
        ("customer.subscription.updated", fixture("subscription")),
        ("invoice.paid", fixture("invoice")),
        ("invoice_payment.paid", fixture("invoice_payment")),
        ("payment_intent.succeeded", fixture("payment_intent")),
        ("charge.succeeded", fixture("charge")),
        ("customer.created", fixture("customer")),
        ("payment_method.updated", fixture("payment_method")),
        ("checkout.session.completed", fixture("checkout_session")),
        ("setup_intent.succeeded", fixture("setup_intent")),
        ("product.updated", fixture("product")),
        ("price.created", fixture("price")),
        ("coupon.updated", fixture("coupon")),
        ("promotion_code.created", fixture("promotion_code")),
        ("customer.discount.created", fixture("discount")),
        ("refund.updated", fixture("refund")),
        ("charge.dispute.created", fixture("dispute")),
        ("credit_note.created", fixture("credit_note")),
        (
            "subscription_schedule.updated",
            fixture("subscription_schedule"),
        ),
        ("customer.tax_id.created", fixture("tax_id")),
        (
            "entitlements.active_entitlement_summary.updated",
            fixture("entitlement_summary"),
        ),
    ]
}

#[test]
fn every_doc_carries_its_id() {
    let mut cases = one_per_kind();
    cases.push(("customer.deleted", fixture("deleted_customer")));
    let mut seen_kinds = Vec::new();
    for (event_type, object) in cases {
        let c = change(event_type, &object);
        assert_eq!(c.doc["id"], c.id.as_str(), "{event_type}");
        assert!(c.doc.is_object());
        seen_kinds.push(c.kind);
    }
    for kind in kinds::ALL {
        assert!(seen_kinds.iter().any(|k| k == kind), "{kind} not covered");
    }
}

#[test]
fn bad_objects_are_permanent_handler_errors() {
    let bad: Vec<(&str, Value)> = vec![
        (
            "customer.subscription.updated",
            with(fixture("subscription"), json!({"id": null})),
        ),
        (
            "customer.subscription.updated",
            with(fixture("subscription"), json!({"status": "sleeping"})),
        ),
        (
            "customer.subscription.updated",
            with(fixture("subscription"), json!({"customer": 42})),
        ),
        ("customer.subscription.updated", fixture("invoice")),
        ("invoice.paid", with(fixture("invoice"), json!({"id": ""}))),
        (
            "invoice.paid",
            with(
                fixture("invoice"),
                json!({"customer": {"object": "customer"}}),
            ),
        ),
        (
            "invoice_payment.paid",
            with(fixture("invoice_payment"), json!({"invoice": null})),
        ),
        ("charge.succeeded", json!("ch_123")),
        (
            "payment_intent.succeeded",
            json!({"object": "payment_intent"}),
        ),
        (
            "customer.updated",
            with(fixture("customer"), json!({"deleted": "yes"})),
        ),
        (
            "payment_method.attached",
            with(fixture("payment_method"), json!({"customer": ["cus_1"]})),
        ),
        (
            "checkout.session.completed",
            with(fixture("checkout_session"), json!({"id": 7})),
        ),
        ("setup_intent.succeeded", json!({})),
        (
            "product.updated",
            with(fixture("product"), json!({"id": 5})),
        ),
        (
            "price.updated",
            with(fixture("price"), json!({"product": 5})),
        ),
        ("coupon.updated", fixture("product")),
        (
            "promotion_code.updated",
            with(fixture("promotion_code"), json!({"coupon": {"name": "x"}})),
        ),
        (
            "customer.discount.created",
            with(fixture("discount"), json!({"id": null})),
        ),
        (
            "refund.updated",
            with(fixture("refund"), json!({"charge": [1]})),
        ),
        ("charge.dispute.created", fixture("refund")),
        (
            "credit_note.created",
            with(fixture("credit_note"), json!({"id": ""})),
        ),
        (
            "subscription_schedule.updated",
            with(fixture("subscription_schedule"), json!({"phases": {}})),
        ),
        (
            "customer.tax_id.created",
            with(fixture("tax_id"), json!({"deleted": "no"})),
        ),
        (
            "entitlements.active_entitlement_summary.updated",
            with(fixture("entitlement_summary"), json!({"customer": null})),
        ),
        (
            "entitlements.active_entitlement_summary.updated",
            with(
                fixture("entitlement_summary"),
                json!({"entitlements": {"data": [{"lookup_key": 3}]}}),
            ),
        ),
    ];
    for (event_type, object) in bad {
        let handler = handler_for(event_type);
        let err = handler
            .changes(event_type, &object)
            .expect_err(&format!("{event_type} with {object} must fail"));
        assert_eq!(err.handler, handler.name());
        assert!(!err.message.is_empty());
    }
}

/// Each kind's doc has exactly the fields `kinds::INFO` lists (which the SQL views and the
/// export rely on), plus the whole object as `raw`.
#[test]
fn docs_have_the_listed_fields_and_the_raw_object() {
    for (event_type, object) in one_per_kind() {
        let c = change(event_type, &object);
        let info = kinds::info_of(&c.kind).expect("built-in kind");
        let mut fields: Vec<&str> = c
            .doc
            .as_object()
            .expect("object doc")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut expected: Vec<&str> = info.fields.iter().copied().chain(["raw"]).collect();
        expected.sort_unstable();
        assert_eq!(fields, expected, "{event_type}");
        assert_eq!(c.doc["raw"], object, "{event_type}");
    }
    // A deleted customer keeps nothing personal, its raw object included.
    let stub = change("customer.deleted", &fixture("customer"));
    assert!(stub.doc.get("raw").is_none());
}

#[test]
fn catalog_fixtures() {
    let product = change("product.updated", &fixture("product"));
    assert_eq!(product.kind, kinds::PRODUCT);
    assert_eq!(product.customer, None);
    assert_eq!(product.doc["name"], "Pro plan");
    assert_eq!(
        product.doc["default_price"],
        "price_1QxA1bLkdIwHu7ixPro0001"
    );
    assert_eq!(product.doc["deleted"], false);
    assert_eq!(
        change("product.deleted", &fixture("product")).doc["deleted"],
        true
    );

    let price = change("price.updated", &fixture("price"));
    assert_eq!(price.kind, kinds::PRICE);
    assert_eq!(price.doc["product"], "prod_QxA1b2C3d4E5f6");
    assert_eq!(price.doc["unit_amount"], 2900);
    assert_eq!(price.doc["interval"], "month");
    assert_eq!(price.doc["interval_count"], 1);
    assert_eq!(price.doc["lookup_key"], "pro_monthly");

    let coupon = change("coupon.updated", &fixture("coupon"));
    assert_eq!(
        (coupon.kind.as_str(), coupon.id.as_str()),
        ("coupon", "SPRING25")
    );
    assert_eq!(coupon.doc["percent_off"], 25.0);
    assert_eq!(coupon.doc["duration"], "repeating");
    assert_eq!(coupon.doc["valid"], true);
    assert_eq!(
        change("coupon.deleted", &fixture("coupon")).doc["deleted"],
        true
    );

    let promo = change("promotion_code.updated", &fixture("promotion_code"));
    assert_eq!(promo.kind, kinds::PROMOTION_CODE);
    assert_eq!(promo.doc["code"], "SPRING25NOW");
    assert_eq!(promo.doc["coupon"], "SPRING25");
    assert_eq!(promo.doc["times_redeemed"], 7);
    // Restricted to one customer, it belongs to that customer.
    let own = with(fixture("promotion_code"), json!({"customer": "cus_1"}));
    assert_eq!(
        change("promotion_code.created", &own).customer.as_deref(),
        Some("cus_1")
    );
}

#[test]
fn discount_fixture_is_a_subscription_discount() {
    let c = change("customer.discount.created", &fixture("discount"));
    assert_eq!(c.kind, kinds::DISCOUNT);
    assert_eq!(c.customer.as_deref(), Some("cus_RsT9uV0wX1yZ2a"));
    assert_eq!(c.doc["subscription"], "sub_1QxD4eLkdIwHu7ixSub00001");
    assert_eq!(c.doc["coupon"], "SPRING25");
    assert_eq!(c.doc["promotion_code"], "promo_1QxB2cLkdIwHu7ixSpr0001");
    assert_eq!(c.doc["end"], 1748736000);
    assert_eq!(c.doc["deleted"], false);
    let removed = change("customer.discount.deleted", &fixture("discount"));
    assert_eq!(removed.doc["deleted"], true);
    // A customer-level discount names no subscription.
    let on_customer = with(fixture("discount"), json!({"subscription": null}));
    assert_eq!(
        change("customer.discount.updated", &on_customer).doc["subscription"],
        Value::Null
    );
    // The subscription lists its discounts by id.
    let sub = with(
        fixture("subscription"),
        json!({"discounts": ["di_1QxC3dLkdIwHu7ixDisc0001", {"id": "di_2", "object": "discount"}]}),
    );
    assert_eq!(
        change("customer.subscription.updated", &sub).doc["discounts"],
        json!(["di_1QxC3dLkdIwHu7ixDisc0001", "di_2"])
    );
}

#[test]
fn adjustment_fixtures() {
    let refund = change("refund.updated", &fixture("refund"));
    assert_eq!(refund.kind, kinds::REFUND);
    assert_eq!(refund.customer, None);
    assert_eq!(refund.doc["charge"], "ch_3QxE5fLkdIwHu7ix0Chg0001");
    assert_eq!(refund.doc["payment_intent"], "pi_3QxE5fLkdIwHu7ix0Pay0001");
    assert_eq!(refund.doc["status"], "succeeded");
    assert_eq!(refund.doc["reason"], "requested_by_customer");
    // The same refund through the charge's refund event.
    assert_eq!(change("charge.refund.updated", &fixture("refund")), refund);

    let dispute = change("charge.dispute.funds_withdrawn", &fixture("dispute"));
    assert_eq!(dispute.kind, kinds::DISPUTE);
    assert_eq!(dispute.doc["status"], "needs_response");
    assert_eq!(dispute.doc["reason"], "fraudulent");
    assert_eq!(dispute.doc["evidence_due_by"], 1742774399);
    assert_eq!(dispute.doc["is_charge_refundable"], false);

    let note = change("credit_note.created", &fixture("credit_note"));
    assert_eq!(note.kind, kinds::CREDIT_NOTE);
    assert_eq!(note.customer.as_deref(), Some("cus_RsT9uV0wX1yZ2a"));
    assert_eq!(note.doc["invoice"], "in_1QxG7hLkdIwHu7ixInv00001");
    assert_eq!(note.doc["number"], "ACME-0042-CN-01");
    assert_eq!(note.doc["type"], "post_payment");
    assert_eq!(note.doc["total"], 1450);
    let voided = with(
        fixture("credit_note"),
        json!({"status": "void", "voided_at": 1741305600}),
    );
    assert_eq!(change("credit_note.voided", &voided).doc["status"], "void");
}

#[test]
fn schedule_tax_id_and_entitlement_fixtures() {
    let schedule = change(
        "subscription_schedule.updated",
        &fixture("subscription_schedule"),
    );
    assert_eq!(schedule.kind, kinds::SUBSCRIPTION_SCHEDULE);
    assert_eq!(schedule.customer.as_deref(), Some("cus_RsT9uV0wX1yZ2a"));
    assert_eq!(schedule.doc["subscription"], "sub_1QxD4eLkdIwHu7ixSub00001");
    assert_eq!(schedule.doc["status"], "active");
    assert_eq!(schedule.doc["current_phase_start"], 1741305600);
    assert_eq!(schedule.doc["current_phase_end"], 1743984000);
    assert_eq!(schedule.doc["phase_count"], 2);
    assert_eq!(schedule.doc["end_behavior"], "release");

    let tax_id = change("customer.tax_id.created", &fixture("tax_id"));
    assert_eq!(tax_id.kind, kinds::TAX_ID);
    assert_eq!(tax_id.customer.as_deref(), Some("cus_RsT9uV0wX1yZ2a"));
    assert_eq!(tax_id.doc["type"], "eu_vat");
    assert_eq!(tax_id.doc["value"], "DE123456789");
    assert_eq!(tax_id.doc["verification_status"], "pending");
    assert_eq!(
        change("customer.tax_id.deleted", &fixture("tax_id")).doc["deleted"],
        true
    );

    let summary = change(
        "entitlements.active_entitlement_summary.updated",
        &fixture("entitlement_summary"),
    );
    // The contract with the read API: kind, id = customer, sorted lookup keys.
    assert_eq!(summary.kind, "entitlement_summary");
    assert_eq!(summary.id, "cus_RsT9uV0wX1yZ2a");
    assert_eq!(summary.customer.as_deref(), Some("cus_RsT9uV0wX1yZ2a"));
    assert_eq!(summary.doc["features"], json!(["audit_log", "sso"]));
    assert_eq!(summary.doc["complete"], true);
    // Losing every feature is a summary with none.
    let none = with(
        fixture("entitlement_summary"),
        json!({"entitlements": {"object": "list", "data": [], "has_more": false}}),
    );
    assert_eq!(
        change("entitlements.active_entitlement_summary.updated", &none).doc["features"],
        json!([])
    );
}

// ----- order independence -----

/// One version of a subscription as a sequence of events would carry it.
fn subscription_version(n: usize) -> (String, Value) {
    let statuses = ["trialing", "active", "past_due", "active", "canceled"];
    let event_type = if n + 1 == statuses.len() {
        "customer.subscription.deleted"
    } else {
        "customer.subscription.updated"
    };
    let object = with(
        fixture("subscription"),
        json!({"status": statuses[n], "cancel_at_period_end": n >= 3}),
    );
    (event_type.to_owned(), object)
}

/// The records after writing `events` (event id, created seconds, type, object) in order,
/// newest-wins by as-of then tiebreak, as the stores do.
fn fold(events: &[(String, i64, String, Value)]) -> BTreeMap<(String, String), StateRecord> {
    let mut store = BTreeMap::new();
    for (event_id, created, event_type, object) in events {
        for c in handler_for(event_type)
            .changes(event_type, object)
            .unwrap_or_else(|e| panic!("{e}"))
        {
            let record = StateRecord {
                tenant: "t".to_owned(),
                kind: c.kind,
                id: c.id,
                customer: c.customer,
                as_of_ms: created * 1000,
                tiebreak: event_id.clone(),
                doc: c.doc,
            };
            let key = (record.kind.clone(), record.id.clone());
            let newer = store
                .get(&key)
                .is_none_or(|existing: &StateRecord| record.supersedes(existing));
            if newer {
                store.insert(key, record);
            }
        }
    }
    store
}

fn history() -> Vec<(String, i64, String, Value)> {
    let mut events: Vec<(String, i64, String, Value)> = (0..5)
        .map(|n| {
            let (event_type, object) = subscription_version(n);
            (
                format!("evt_sub_{n}"),
                1_000 + n as i64 * 10,
                event_type,
                object,
            )
        })
        .collect();
    let invoice = fixture("invoice");
    for (n, status) in ["draft", "open", "paid"].into_iter().enumerate() {
        let object = with(invoice.clone(), json!({"status": status}));
        events.push((
            format!("evt_in_{n}"),
            2_000 + n as i64,
            "invoice.updated".to_owned(),
            object,
        ));
    }
    // Two events in the same second: the larger event id decides, in any order.
    let pm = fixture("payment_method");
    events.push((
        "evt_pm_a".to_owned(),
        3_000,
        "payment_method.attached".to_owned(),
        with(pm.clone(), json!({"customer": "cus_1"})),
    ));
    events.push((
        "evt_pm_b".to_owned(),
        3_000,
        "payment_method.detached".to_owned(),
        pm,
    ));
    events
}

#[test]
fn in_order_history_ends_in_the_latest_versions() {
    let store = fold(&history());
    let sub = &store[&(
        "subscription".to_owned(),
        "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".to_owned(),
    )];
    assert_eq!(sub.doc["status"], "canceled");
    assert_eq!(sub.doc["deleted"], true);
    let invoice = &store[&(
        "invoice".to_owned(),
        "in_1Pgc6tB7WZ01zgkWu9fdqL6I".to_owned(),
    )];
    assert_eq!(invoice.doc["status"], "paid");
    let pm = &store[&(
        "payment_method".to_owned(),
        "pm_1Pgc75B7WZ01zgkWlHVgdEGJ".to_owned(),
    )];
    assert_eq!(pm.doc["attached"], false);
}

proptest! {
    #[test]
    fn any_order_and_any_duplicates_give_the_same_records(
        order in Just((0..10).collect::<Vec<usize>>()).prop_shuffle(),
        duplicates in proptest::collection::vec(0..10usize, 0..6),
    ) {
        let events = history();
        let expected = fold(&events);
        let arrived: Vec<_> = order
            .iter()
            .chain(duplicates.iter())
            .map(|&i| events[i].clone())
            .collect();
        prop_assert_eq!(fold(&arrived), expected);
    }
}
