//! Tenant isolation: two tenants whose Stripe accounts use the same customer, subscription
//! and even event ids, in one mixed stream on every source: each tenant's state holds only
//! its own versions; an event whose tenant cannot be resolved goes to the DLQ as
//! `unknown_tenant`.

use crate::reliability_support;

use reliability_support::inproc::{FaultyBackend, fast_config};
use serde_json::{Value, json};
use stripe_worker::backend::dlq_attributes::ERROR_KIND;
use stripe_worker::backend::{BusEntry, StateRecord};
use stripe_worker::event::envelope;

/// The ids both tenants use.
const CUSTOMER: &str = "cus_SAME";
const SUBSCRIPTION: &str = "sub_SAME";

fn event(id: &str, event_type: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "type": event_type, "created": created,
        "livemode": false, "api_version": "2025-03-31.basil", "data": {"object": object},
    })
}

/// One tenant's history: a customer and a subscription with this tenant's own values,
/// under the shared ids and the shared event ids.
fn history(email: &str, status: &str, quantity: i64) -> Vec<Value> {
    let customer = json!({"id": CUSTOMER, "object": "customer", "email": email});
    let subscription = |status: &str| {
        json!({
            "id": SUBSCRIPTION, "object": "subscription", "customer": CUSTOMER,
            "status": status, "created": 1_700_000_000, "currency": "usd",
            "current_period_start": 1_700_000_000, "current_period_end": 1_702_592_000,
            "cancel_at_period_end": false,
            "items": {"object": "list", "data": [{"id": "si_SAME", "object": "subscription_item",
                "quantity": quantity, "price": {"id": "price_SAME", "object": "price"},
                "current_period_start": 1_700_000_000, "current_period_end": 1_702_592_000}]},
        })
    };
    vec![
        event("evt_SAME_1", "customer.created", 1_700_000_000, customer),
        event(
            "evt_SAME_2",
            "customer.subscription.created",
            1_700_000_001,
            subscription("incomplete"),
        ),
        event(
            "evt_SAME_3",
            "customer.subscription.updated",
            1_700_000_002,
            subscription(status),
        ),
    ]
}

fn record<'a>(records: &'a [StateRecord], tenant: &str, kind: &str) -> &'a StateRecord {
    records
        .iter()
        .find(|r| r.tenant == tenant && r.kind == kind)
        .unwrap_or_else(|| panic!("{tenant} has a {kind}: {records:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_sharing_ids_never_see_each_other() {
    let tenants = ["acme".to_owned(), "globex".to_owned()];
    let config = fast_config(
        &tenants,
        &[
            ("ed_acme".to_owned(), "acme".to_owned()),
            ("ed_globex".to_owned(), "globex".to_owned()),
        ],
    );
    let backend = FaultyBackend::new(&config, 0.0, 0.0, 3);
    let acme = history("billing@acme.test", "active", 3);
    let globex = history("ap@globex.test", "past_due", 7);
    // Mixed: acme by webhook and partner snapshot, globex by partner and webhook, in
    // alternating order, newest first for one of them.
    let mut entries: Vec<BusEntry> = Vec::new();
    for (a, g) in acme.iter().zip(globex.iter().rev()) {
        entries.push(envelope::webhook_snapshot_entry(a, "acme", 0, None).unwrap());
        entries.push(envelope::partner_snapshot_entry(g, "ed_globex").unwrap());
        entries.push(envelope::partner_snapshot_entry(a, "ed_acme").unwrap());
        entries.push(envelope::webhook_snapshot_entry(g, "globex", 0, None).unwrap());
    }
    // A third account's event with the same ids: no tenant claims it.
    let stranger = history("x@initech.test", "canceled", 1);
    entries.push(envelope::partner_snapshot_entry(&stranger[2], "ed_initech").unwrap());
    entries.push(envelope::partner_snapshot_entry(&stranger[0], "ed_initech").unwrap());
    backend.publish(&entries).await;
    backend.run_until_idle(&config, None).await;

    let records = backend.export().await;
    assert_eq!(
        records.iter().filter(|r| r.tenant == "acme").count(),
        records.iter().filter(|r| r.tenant == "globex").count(),
        "{records:#?}"
    );
    assert!(records.iter().all(|r| tenants.contains(&r.tenant)));
    for (tenant, email, status) in [
        ("acme", "billing@acme.test", "active"),
        ("globex", "ap@globex.test", "past_due"),
    ] {
        let customer = record(&records, tenant, "customer");
        assert_eq!(customer.id, CUSTOMER);
        assert_eq!(customer.doc["email"], email, "{tenant}");
        let subscription = record(&records, tenant, "subscription");
        assert_eq!(subscription.id, SUBSCRIPTION);
        assert_eq!(subscription.doc["status"], status, "{tenant}");
        assert_eq!(subscription.customer.as_deref(), Some(CUSTOMER));
    }
    let dead: Vec<String> = backend
        .dead_letters()
        .await
        .into_iter()
        .map(|(_, m)| m.attributes[ERROR_KIND].clone())
        .collect();
    assert_eq!(dead, ["unknown_tenant", "unknown_tenant"]);
    assert_eq!(backend.left_in_queues().await, (0, 0, 0));
}
