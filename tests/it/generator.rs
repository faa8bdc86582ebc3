//! The demo generator: determinism, size, event shape, per-object ordering, tenant
//! isolation, and agreement between its own model and what the standard handlers make of
//! its events (snapshot and thin, in any order).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::Value;
use stripe_worker::backend::StateRecord;
use stripe_worker::demo::{GeneratedEvent, GeneratorConfig, Mismatch, generate};
use stripe_worker::event::ObjectRef;
use stripe_worker::event::envelope::api_path;
use stripe_worker::handlers::{kinds, standard_handlers};
use stripe_worker::stripe::double::StripeDouble;
use stripe_worker::stripe::hydrate::Hydrator;

type Store = BTreeMap<(String, String, String), StateRecord>;

/// Apply one object to the store the way the worker does: each handling handler's changes,
/// stamped and written newest-wins.
fn apply(
    store: &mut Store,
    tenant: &str,
    event_type: &str,
    object: &Value,
    as_of_ms: i64,
    tiebreak: &str,
) {
    for handler in standard_handlers() {
        if !handler.handles(event_type) {
            continue;
        }
        let changes = match handler.changes(event_type, object) {
            Ok(changes) => changes,
            Err(e) => panic!("{event_type} rejected by {}: {e}", handler.name()),
        };
        for change in changes {
            let record = StateRecord {
                tenant: tenant.to_owned(),
                kind: change.kind,
                id: change.id,
                customer: change.customer,
                as_of_ms,
                tiebreak: tiebreak.to_owned(),
                doc: change.doc,
            };
            let key = (
                record.tenant.clone(),
                record.kind.clone(),
                record.id.clone(),
            );
            match store.get(&key) {
                Some(existing) if !record.supersedes(existing) => {}
                _ => {
                    store.insert(key, record);
                }
            }
        }
    }
}

fn str_field<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn apply_snapshot(store: &mut Store, e: &GeneratedEvent) {
    let created = e.event["created"].as_i64().unwrap_or_default();
    apply(
        store,
        &e.tenant,
        str_field(&e.event, "/type"),
        &e.event["data"]["object"],
        created * 1000,
        str_field(&e.event, "/id"),
    );
}

fn snapshot_state<'a>(events: impl IntoIterator<Item = &'a GeneratedEvent>) -> Store {
    let mut store = Store::new();
    for e in events {
        apply_snapshot(&mut store, e);
    }
    store
}

fn records(store: &Store) -> Vec<StateRecord> {
    store.values().cloned().collect()
}

fn config(events: usize, tenants: usize, seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        events,
        tenants,
        seed,
    }
}

#[test]
fn same_seed_same_stream_other_seed_other_stream() {
    let a = generate(&config(1500, 3, 42));
    let b = generate(&config(1500, 3, 42));
    assert_eq!(a, b);
    let c = generate(&config(1500, 3, 43));
    assert_ne!(a.events, c.events);
}

#[test]
fn event_count_is_near_the_target() {
    for target in [1, 100, 2_000] {
        let started = Instant::now();
        let stream = generate(&config(target, 4, 7));
        let n = stream.events.len();
        assert!(n >= target && n <= target + 100, "target {target}, got {n}");
        eprintln!("{target} events generated in {:?}", started.elapsed());
    }
}

#[test]
fn events_are_realistic_v1_events_in_time_order() {
    let stream = generate(&config(3_000, 3, 5));
    let mut ids = HashSet::new();
    let mut last_created = i64::MIN;
    for e in &stream.events {
        let ev = &e.event;
        assert!(str_field(ev, "/id").starts_with("evt_"));
        assert!(
            ids.insert(str_field(ev, "/id").to_owned()),
            "event ids are unique"
        );
        assert_eq!(ev["object"], "event");
        assert!(str_field(ev, "/api_version") >= "2025-03-31");
        assert_eq!(ev["livemode"], false);
        let created = ev["created"].as_i64().expect("created is seconds");
        assert!(created >= last_created, "stream is in time order");
        last_created = created;
        let object = &ev["data"]["object"];
        let object_type = str_field(object, "/object");
        if object_type == "entitlements.active_entitlement_summary" {
            // A summary has no id and no metadata: it is the customer's.
            assert!(object["customer"].is_string());
            continue;
        }
        assert!(object["id"].is_string());
        if ["invoice_payment", "discount", "tax_id"].contains(&object_type) {
            // These have no metadata in the Stripe API.
            continue;
        }
        assert_eq!(
            object
                .pointer("/metadata/tenant_id")
                .and_then(Value::as_str),
            Some(e.tenant.as_str())
        );
    }
}

#[test]
fn each_objects_events_have_strictly_increasing_created() {
    let stream = generate(&config(5_000, 3, 11));
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    for e in &stream.events {
        // An entitlement summary is known by its customer.
        let id = match str_field(&e.event, "/data/object/id") {
            "" => str_field(&e.event, "/data/object/customer"),
            id => id,
        };
        let key = (e.tenant.clone(), id.to_owned());
        let created = e.event["created"].as_i64().unwrap_or_default();
        if let Some(previous) = last.insert(key.clone(), created) {
            assert!(created > previous, "{key:?}: {created} after {previous}");
        }
    }
}

#[test]
fn ids_are_unique_per_tenant_and_some_are_shared_across_tenants() {
    let stream = generate(&config(5_000, 3, 13));
    // Within a tenant one id is one object (same `object` type throughout).
    let mut types: HashMap<(String, String), String> = HashMap::new();
    let mut tenants_of: HashMap<String, HashSet<String>> = HashMap::new();
    for e in &stream.events {
        let object = &e.event["data"]["object"];
        let id = str_field(object, "/id").to_owned();
        let ty = str_field(object, "/object").to_owned();
        let previous = types.insert((e.tenant.clone(), id.clone()), ty.clone());
        assert!(
            previous.is_none_or(|p| p == ty),
            "{id} is two objects in {}",
            e.tenant
        );
        tenants_of.entry(id).or_default().insert(e.tenant.clone());
    }
    let shared_customers = tenants_of
        .iter()
        .filter(|(id, t)| id.starts_with("cus_") && t.len() > 1)
        .count();
    let shared_subscriptions = tenants_of
        .iter()
        .filter(|(id, t)| id.starts_with("sub_") && t.len() > 1)
        .count();
    assert!(shared_customers > 5, "{shared_customers} shared customers");
    assert!(
        shared_subscriptions > 5,
        "{shared_subscriptions} shared subscriptions"
    );
}

#[test]
fn the_stream_covers_every_record_kind_and_unhandled_types() {
    let stream = generate(&config(3_000, 2, 17));
    for kind in kinds::ALL {
        assert!(stream.expected.count_of(kind) > 0, "no {kind} expected");
    }
    let types: HashSet<&str> = stream
        .events
        .iter()
        .map(|e| str_field(&e.event, "/type"))
        .collect();
    for t in [
        "customer.subscription.deleted",
        "invoice.payment_failed",
        "invoice.marked_uncollectible",
        "payment_intent.payment_failed",
        "charge.failed",
        "payment_method.detached",
        "customer.deleted",
        "checkout.session.expired",
        "setup_intent.created",
        "product.updated",
        "coupon.deleted",
        "customer.discount.deleted",
        "customer.tax_id.updated",
        "refund.updated",
        "charge.dispute.closed",
        "subscription_schedule.released",
        "entitlements.active_entitlement_summary.updated",
    ] {
        assert!(types.contains(t), "no {t} event");
    }
    // Some events are handled by no handler; the worker must simply acknowledge them.
    let handlers = standard_handlers();
    assert!(types.iter().any(|t| handlers.iter().all(|h| !h.handles(t))));
}

#[test]
fn handlers_applied_to_snapshots_reach_the_generators_model() {
    let stream = generate(&config(20_000, 4, 2024));
    assert!((20_000..=20_100).contains(&stream.events.len()));
    let store = snapshot_state(&stream.events);
    let mismatches = stream.expected.compare(&records(&store));
    let shown: Vec<String> = mismatches
        .iter()
        .take(10)
        .map(Mismatch::to_string)
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {shown:#?}",
        mismatches.len()
    );
    assert_eq!(store.len(), stream.expected.record_count());
}

#[test]
fn any_arrival_order_gives_the_same_state() {
    let stream = generate(&config(3_000, 3, 99));
    let in_order = snapshot_state(&stream.events);
    for seed in 0..3 {
        let mut shuffled: Vec<&GeneratedEvent> = stream.events.iter().collect();
        shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
        // Duplicates, as at-least-once delivery gives them, change nothing either.
        let again: Vec<&GeneratedEvent> = shuffled.iter().step_by(7).copied().collect();
        shuffled.extend(again);
        assert_eq!(snapshot_state(shuffled), in_order);
    }
}

#[tokio::test]
async fn thin_events_hydrated_from_the_stripe_double_reach_the_same_model() {
    let stream = generate(&config(4_000, 3, 31));
    let double = StripeDouble::new();
    double
        .put_all(stream.final_objects.clone())
        .expect("every final object has an id");
    let mut store = Store::new();
    for (n, e) in stream.events.iter().enumerate() {
        let object = &e.event["data"]["object"];
        let reference = ObjectRef {
            id: str_field(object, "/id").to_owned(),
            object_type: str_field(object, "/object").to_owned(),
            url: None,
            customer: None,
        };
        // Discounts and entitlement summaries have no API path: they only ever come as
        // snapshots.
        let current = if api_path(&reference.object_type, &reference.id).is_none() {
            object.clone()
        } else {
            double
                .fetch(&e.tenant, &reference, None)
                .await
                .expect("the double serves every object an event named")
        };
        // A hydrated object is as of its fetch, so later fetches win.
        apply(
            &mut store,
            &e.tenant,
            str_field(&e.event, "/type"),
            &current,
            n as i64,
            str_field(&e.event, "/id"),
        );
    }
    let mismatches = stream.expected.compare(&records(&store));
    let shown: Vec<String> = mismatches
        .iter()
        .take(10)
        .map(Mismatch::to_string)
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {shown:#?}",
        mismatches.len()
    );
}

#[test]
fn compare_catches_wrong_missing_and_foreign_records() {
    let stream = generate(&config(500, 2, 3));
    let store = snapshot_state(&stream.events);
    let mut recs = records(&store);
    assert!(stream.expected.compare(&recs).is_empty());

    let sub = recs
        .iter_mut()
        .find(|r| r.kind == "subscription")
        .expect("a subscription");
    sub.doc["status"] = Value::from("unpaid");
    let (tenant, id) = (sub.tenant.clone(), sub.id.clone());
    let found = stream.expected.compare(&recs);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].tenant.as_str(), found[0].id.as_str()),
        (tenant.as_str(), id.as_str())
    );
    assert_eq!(found[0].field, "status");

    let mut foreign = recs[0].clone();
    foreign.tenant = "tenant-elsewhere".to_owned();
    recs.push(foreign);
    let removed = recs.remove(1);
    let found = stream.expected.compare(&recs);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found
            .iter()
            .any(|m| m.id == removed.id && m.actual == "missing")
    );
    assert!(
        found
            .iter()
            .any(|m| m.tenant == "tenant-elsewhere" && m.expected == "absent")
    );
}
