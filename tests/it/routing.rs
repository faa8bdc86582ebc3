//! The routing definition against real Stripe event types and EventBridge envelope shapes:
//! the rendered patterns (what the bus applies) must agree with `domain_for_event_type`
//! on every path, and no event may land in two domains.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};
use stripe_worker::domain::Domain;
use stripe_worker::routing::{Router, domain_for_event_type, domain_pattern, routing_table};

/// Real Stripe v1 event types and where they belong.
const KNOWN: &[(&str, Option<Domain>)] = &[
    ("customer.subscription.created", Some(Domain::Subscription)),
    ("customer.subscription.updated", Some(Domain::Subscription)),
    ("customer.subscription.deleted", Some(Domain::Subscription)),
    ("customer.subscription.paused", Some(Domain::Subscription)),
    ("customer.subscription.resumed", Some(Domain::Subscription)),
    (
        "customer.subscription.pending_update_applied",
        Some(Domain::Subscription),
    ),
    (
        "customer.subscription.pending_update_expired",
        Some(Domain::Subscription),
    ),
    (
        "customer.subscription.trial_will_end",
        Some(Domain::Subscription),
    ),
    ("invoice.created", Some(Domain::Payment)),
    ("invoice.deleted", Some(Domain::Payment)),
    ("invoice.finalization_failed", Some(Domain::Payment)),
    ("invoice.finalized", Some(Domain::Payment)),
    ("invoice.marked_uncollectible", Some(Domain::Payment)),
    ("invoice.overdue", Some(Domain::Payment)),
    ("invoice.overpaid", Some(Domain::Payment)),
    ("invoice.paid", Some(Domain::Payment)),
    ("invoice.payment_action_required", Some(Domain::Payment)),
    ("invoice.payment_failed", Some(Domain::Payment)),
    ("invoice.payment_succeeded", Some(Domain::Payment)),
    ("invoice.sent", Some(Domain::Payment)),
    ("invoice.upcoming", Some(Domain::Payment)),
    ("invoice.updated", Some(Domain::Payment)),
    ("invoice.voided", Some(Domain::Payment)),
    ("invoice.will_be_due", Some(Domain::Payment)),
    ("invoice_payment.paid", Some(Domain::Payment)),
    (
        "payment_intent.amount_capturable_updated",
        Some(Domain::Payment),
    ),
    ("payment_intent.canceled", Some(Domain::Payment)),
    ("payment_intent.created", Some(Domain::Payment)),
    ("payment_intent.partially_funded", Some(Domain::Payment)),
    ("payment_intent.payment_failed", Some(Domain::Payment)),
    ("payment_intent.processing", Some(Domain::Payment)),
    ("payment_intent.requires_action", Some(Domain::Payment)),
    ("payment_intent.succeeded", Some(Domain::Payment)),
    ("charge.captured", Some(Domain::Payment)),
    ("charge.expired", Some(Domain::Payment)),
    ("charge.failed", Some(Domain::Payment)),
    ("charge.pending", Some(Domain::Payment)),
    ("charge.refunded", Some(Domain::Payment)),
    ("charge.succeeded", Some(Domain::Payment)),
    ("charge.updated", Some(Domain::Payment)),
    ("charge.dispute.closed", Some(Domain::Payment)),
    ("charge.dispute.created", Some(Domain::Payment)),
    ("charge.dispute.funds_reinstated", Some(Domain::Payment)),
    ("charge.dispute.funds_withdrawn", Some(Domain::Payment)),
    ("charge.dispute.updated", Some(Domain::Payment)),
    ("charge.refund.updated", Some(Domain::Payment)),
    ("customer.created", Some(Domain::Customer)),
    ("customer.updated", Some(Domain::Customer)),
    ("customer.deleted", Some(Domain::Customer)),
    ("customer.source.created", Some(Domain::Customer)),
    ("customer.source.deleted", Some(Domain::Customer)),
    ("customer.source.expiring", Some(Domain::Customer)),
    ("customer.source.updated", Some(Domain::Customer)),
    ("customer.tax_id.created", Some(Domain::Customer)),
    ("customer.tax_id.deleted", Some(Domain::Customer)),
    ("customer.tax_id.updated", Some(Domain::Customer)),
    (
        "checkout.session.async_payment_failed",
        Some(Domain::Customer),
    ),
    (
        "checkout.session.async_payment_succeeded",
        Some(Domain::Customer),
    ),
    ("checkout.session.completed", Some(Domain::Customer)),
    ("checkout.session.expired", Some(Domain::Customer)),
    ("setup_intent.canceled", Some(Domain::Customer)),
    ("setup_intent.created", Some(Domain::Customer)),
    ("setup_intent.requires_action", Some(Domain::Customer)),
    ("setup_intent.setup_failed", Some(Domain::Customer)),
    ("setup_intent.succeeded", Some(Domain::Customer)),
    ("payment_method.attached", Some(Domain::Customer)),
    (
        "payment_method.automatically_updated",
        Some(Domain::Customer),
    ),
    ("payment_method.detached", Some(Domain::Customer)),
    ("payment_method.updated", Some(Domain::Customer)),
    ("customer.discount.created", Some(Domain::Customer)),
    ("customer.discount.deleted", Some(Domain::Customer)),
    ("customer.discount.updated", Some(Domain::Customer)),
    (
        "entitlements.active_entitlement_summary.updated",
        Some(Domain::Customer),
    ),
    ("subscription_schedule.aborted", Some(Domain::Subscription)),
    ("subscription_schedule.canceled", Some(Domain::Subscription)),
    (
        "subscription_schedule.completed",
        Some(Domain::Subscription),
    ),
    ("subscription_schedule.created", Some(Domain::Subscription)),
    ("subscription_schedule.expiring", Some(Domain::Subscription)),
    ("subscription_schedule.released", Some(Domain::Subscription)),
    ("subscription_schedule.updated", Some(Domain::Subscription)),
    ("product.created", Some(Domain::Subscription)),
    ("product.deleted", Some(Domain::Subscription)),
    ("product.updated", Some(Domain::Subscription)),
    ("price.created", Some(Domain::Subscription)),
    ("price.deleted", Some(Domain::Subscription)),
    ("price.updated", Some(Domain::Subscription)),
    ("coupon.created", Some(Domain::Subscription)),
    ("coupon.deleted", Some(Domain::Subscription)),
    ("coupon.updated", Some(Domain::Subscription)),
    ("promotion_code.created", Some(Domain::Subscription)),
    ("promotion_code.updated", Some(Domain::Subscription)),
    ("refund.created", Some(Domain::Payment)),
    ("refund.failed", Some(Domain::Payment)),
    ("refund.updated", Some(Domain::Payment)),
    ("credit_note.created", Some(Domain::Payment)),
    ("credit_note.updated", Some(Domain::Payment)),
    ("credit_note.voided", Some(Domain::Payment)),
    // Types no domain handles; several share a first word with a routed family.
    ("plan.created", None),
    ("invoiceitem.created", None),
    ("invoiceitem.deleted", None),
    ("customer_cash_balance_transaction.created", None),
    ("customer.cash_balance_transaction.created", None),
    ("entitlements.active_entitlement_summary.created", None),
    ("products.updated", None),
    ("payment_link.created", None),
    ("payout.paid", None),
    ("account.updated", None),
    ("billing_portal.session.created", None),
    ("checkout.sessionx.completed", None),
    ("mandate.updated", None),
    ("v2.core.event_destination.ping", None),
    ("v2.billing.meter.error_report_triggered", None),
];

fn webhook_envelope(event_type: &str) -> Value {
    json!({
        "version": "0",
        "id": "00000000-0000-4000-8000-000000000000",
        "detail-type": "Stripe Webhook Event",
        "source": "stripe.webhook",
        "account": "111122223333",
        "time": "2025-06-01T00:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": {
            "id": "evt_1",
            "object": "event",
            "type": event_type,
            "data": { "object": { "id": "obj_1" } }
        }
    })
}

fn partner_envelope(event_type: &str) -> Value {
    let object = if event_type.starts_with("v1.") || event_type.starts_with("v2.") {
        "v2.core.event"
    } else {
        "event"
    };
    json!({
        "version": "0",
        "id": "00000000-0000-4000-8000-000000000001",
        "detail-type": event_type,
        "source": "aws.partner/stripe.com/ed_test_123",
        "account": "111122223333",
        "time": "2025-06-01T00:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": { "id": "evt_2", "object": object, "type": event_type }
    })
}

fn fixture(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn expected(domain: Option<Domain>) -> Vec<Domain> {
    domain.into_iter().collect()
}

#[test]
fn known_types_map_as_documented() {
    for (event_type, domain) in KNOWN {
        assert_eq!(domain_for_event_type(event_type), *domain, "{event_type}");
        if !event_type.starts_with("v2.") {
            let thin = format!("v1.{event_type}");
            assert_eq!(domain_for_event_type(&thin), *domain, "{thin}");
        }
    }
}

#[test]
fn router_agrees_with_the_definition_on_every_path() {
    let router = Router::standard();
    for (event_type, _) in KNOWN {
        let mut names = vec![(*event_type).to_owned()];
        if !event_type.starts_with("v2.") {
            names.push(format!("v1.{event_type}"));
        }
        for name in names {
            let want = expected(domain_for_event_type(&name));
            assert_eq!(
                router.route(&webhook_envelope(&name)),
                want,
                "webhook {name}"
            );
            assert_eq!(
                router.route(&partner_envelope(&name)),
                want,
                "partner {name}"
            );
        }
    }
}

#[test]
fn fixture_envelopes_route_like_their_types() {
    let router = Router::standard();
    for (path, want) in [
        (
            "stripe/eventbridge_snapshot_envelope.json",
            Some(Domain::Customer),
        ),
        ("stripe/eventbridge_thin_envelope.json", None),
        (
            "patterns/envelope_webhook_subscription.json",
            Some(Domain::Subscription),
        ),
        (
            "patterns/envelope_webhook_thin_customer.json",
            Some(Domain::Customer),
        ),
        (
            "patterns/envelope_partner_snapshot_invoice.json",
            Some(Domain::Payment),
        ),
        (
            "patterns/envelope_partner_thin_subscription.json",
            Some(Domain::Subscription),
        ),
        ("patterns/envelope_partner_unrouted_plan.json", None),
    ] {
        let envelope = fixture(path);
        let event_type = envelope["detail"]["type"].as_str().expect("detail.type");
        assert_eq!(domain_for_event_type(event_type), want, "{path}");
        assert_eq!(router.route(&envelope), expected(want), "{path}");
    }
}

#[test]
fn envelopes_from_elsewhere_route_nowhere() {
    let router = Router::standard();
    // Right type, wrong source.
    let mut other_partner = partner_envelope("invoice.paid");
    other_partner["source"] = json!("aws.partner/example.com/ed_1");
    assert!(router.route(&other_partner).is_empty());
    let mut custom = webhook_envelope("invoice.paid");
    custom["source"] = json!("my.app");
    assert!(router.route(&custom).is_empty());
    // Webhook source but the type only in detail-type (not how our ingress publishes).
    let mut misplaced = partner_envelope("invoice.paid");
    misplaced["source"] = json!("stripe.webhook");
    misplaced["detail"] = json!({ "type": "plan.created" });
    assert!(router.route(&misplaced).is_empty());
    // A bare Stripe event is not an envelope.
    let bare = fixture("patterns/bare_event_setup_intent.json");
    assert!(router.route(&bare).is_empty());
}

#[test]
fn table_and_patterns_cover_each_domain() {
    let table = routing_table();
    for domain in Domain::ALL {
        assert!(table.iter().any(|row| row.domain == domain), "{domain}");
        let pattern = domain_pattern(domain);
        for row in table.iter().filter(|row| row.domain == domain) {
            let text = pattern.to_string();
            assert!(
                text.contains(&format!("\"{}", row.value)),
                "{domain} lacks {}",
                row.value
            );
            assert!(
                text.contains(&format!("\"v1.{}", row.value)),
                "{domain} lacks v1.{}",
                row.value
            );
        }
    }
}

proptest! {
    /// Types built from routed families plus arbitrary suffixes: the bus and the function agree,
    /// and nothing lands twice.
    #[test]
    fn random_types_route_once_and_consistently(
        family in prop::sample::select(vec![
            "customer.", "customer.subscription.", "customer.source.", "customer.tax_id.",
            "customer.discount.", "invoice.", "invoiceitem.", "invoice_payment.", "payment_intent.",
            "charge.", "checkout.session.", "checkout.", "setup_intent.", "payment_method.",
            "plan.", "v2.core.", "",
        ]),
        tail in "[a-z_.]{0,12}",
        thin in any::<bool>(),
    ) {
        let name = format!("{}{family}{tail}", if thin { "v1." } else { "" });
        let router = Router::standard();
        let want = expected(domain_for_event_type(&name));
        let by_webhook = router.route(&webhook_envelope(&name));
        let by_partner = router.route(&partner_envelope(&name));
        prop_assert!(by_webhook.len() <= 1, "{} -> {:?}", name, by_webhook);
        prop_assert_eq!(&by_webhook, &want, "webhook {}", name);
        prop_assert_eq!(&by_partner, &want, "partner {}", name);
    }
}
