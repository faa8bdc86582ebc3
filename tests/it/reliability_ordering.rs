//! Ordering and duplicates: any permutation and duplication of one subscription's events
//! across the three sources (webhook snapshot, partner snapshot, partner thin fetched from
//! the Stripe double) leaves the same final state, through `Processor::process_one` on the
//! memory backends.

use crate::reliability_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use reliability_support::inproc::{FaultyBackend, fast_config};
use serde_json::{Value, json};
use stripe_worker::backend::{Receipt, ReceivedMessage};
use stripe_worker::domain::Domain;
use stripe_worker::event::envelope;
use stripe_worker::stripe::double::StripeDouble;
use stripe_worker::worker::Outcome;

const TENANT: &str = "acme";
const DESTINATION: &str = "ed_order_acme";

/// The subscription's versions, oldest first: status and quantity change on each event.
fn lifecycle() -> Vec<Value> {
    let steps = [
        ("customer.subscription.created", "incomplete", 1),
        ("customer.subscription.updated", "active", 1),
        ("customer.subscription.updated", "active", 4),
        ("customer.subscription.updated", "past_due", 4),
        ("customer.subscription.updated", "active", 2),
        ("customer.subscription.deleted", "canceled", 2),
    ];
    steps
        .iter()
        .enumerate()
        .map(|(i, (event_type, status, quantity))| {
            json!({
                "id": format!("evt_order_{i}"), "object": "event", "type": event_type,
                "created": 1_700_000_000 + i as i64 * 60, "livemode": false,
                "api_version": "2025-03-31.basil",
                "data": {"object": {
                    "id": "sub_order", "object": "subscription", "customer": "cus_order",
                    "status": status, "created": 1_700_000_000, "currency": "usd",
                    "cancel_at_period_end": false,
                    "items": {"object": "list", "data": [{"id": "si_order",
                        "object": "subscription_item", "quantity": quantity,
                        "price": {"id": "price_order", "object": "price"},
                        "current_period_start": 1_700_000_000,
                        "current_period_end": 1_702_592_000}]},
                }},
            })
        })
        .collect()
}

/// The message body of event `index` on `source` (0 webhook, 1 partner snapshot, 2 thin).
fn body(events: &[Value], index: usize, source: u8) -> String {
    let event = &events[index];
    let entry = match source {
        0 => envelope::webhook_snapshot_entry(event, TENANT, 0, None),
        1 => envelope::partner_snapshot_entry(event, DESTINATION),
        _ => envelope::partner_thin_entry(event, DESTINATION),
    }
    .unwrap();
    envelope::envelope_json(
        &entry,
        &format!("order-{index}-{source}"),
        0,
        "us-east-1",
        None,
    )
    .unwrap()
    .to_string()
}

/// Process these deliveries in order on fresh memory backends; the final subscription doc.
fn final_doc(deliveries: &[(usize, u8)]) -> Value {
    let events = lifecycle();
    let config = fast_config(
        &[TENANT.to_owned()],
        &[(DESTINATION.to_owned(), TENANT.to_owned())],
    );
    let backend = FaultyBackend::new(&config, 0.0, 0.0, 1);
    let double = StripeDouble::new();
    // The Stripe API serves the subscription's current (last) version.
    double
        .put(TENANT, events.last().unwrap()["data"]["object"].clone())
        .unwrap();
    let worker = backend.worker(&config, Some(Arc::new(double)));
    let processor = worker.processor();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (n, &(index, source)) in deliveries.iter().enumerate() {
            let message = ReceivedMessage {
                message_id: format!("m{n}"),
                receipt: Receipt(format!("r{n}")),
                body: body(&events, index, source),
                receive_count: 1,
                sent_at_ms: 0,
                attributes: BTreeMap::new(),
            };
            let outcome = processor
                .process_one(Domain::Subscription, &message)
                .await
                .outcome;
            assert!(
                matches!(outcome, Outcome::Applied { .. } | Outcome::Duplicate),
                "delivery {n} ({index}, {source}): {outcome:?}"
            );
        }
        let records = backend.export().await;
        assert_eq!(records.len(), 1, "{records:#?}");
        records[0].doc.clone()
    })
}

/// Every event once by webhook, in order: the reference.
fn reference() -> Value {
    let in_order: Vec<(usize, u8)> = (0..lifecycle().len()).map(|i| (i, 0)).collect();
    final_doc(&in_order)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_order_and_duplication_across_sources_gives_the_same_state(
        sources in prop::collection::vec(0u8..3, 6),
        extra in prop::collection::vec((0usize..6, 0u8..3), 0..12),
        seed in any::<u64>(),
    ) {
        // Every event at least once (each on a random source), plus random duplicates.
        let mut deliveries: Vec<(usize, u8)> = sources.into_iter().enumerate().collect();
        deliveries.extend(extra);
        deliveries.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let doc = final_doc(&deliveries);
        prop_assert_eq!(doc, reference());
    }
}

#[test]
fn the_reference_is_the_last_version() {
    let doc = reference();
    assert_eq!(doc["status"], "canceled", "{doc}");
}
