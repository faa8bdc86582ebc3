//! The Stripe double: a stand-in for the Stripe API, used by the demo and the tests to
//! hydrate thin events without a network or an API key, and served over HTTP
//! ([`StripeDouble::serve`]) for the real client: retrieve, list endpoints with
//! pagination and `created` filters, the v1 and v2 event lists, and injected 429s.
//!
//! It is not Stripe: it serves exactly the objects and events it was given with
//! [`StripeDouble::put`], [`StripeDouble::put_event`] and [`StripeDouble::put_v2_event`],
//! keyed by tenant and id, and
//! answers unknown ids the way the real API answers a 404. In process it can also fail a
//! seeded fraction of fetches with a transient error, so the worker's retry path runs in
//! demos and tests.

mod http;

pub use http::{DoubleServer, ServeOptions};

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::{self, BoxFuture, FutureExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::event::ObjectRef;
use crate::stripe::hydrate::{HydrateError, Hydrator};

/// Why an object could not be stored in the double.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeDoubleError {
    /// Stripe objects are served by id; an object without one can never be fetched.
    #[error("object for tenant `{tenant}` has no string `id`")]
    MissingId {
        /// The tenant the object was meant for.
        tenant: String,
    },
}

/// Injected transient failures: a seeded generator and a rate, so a run is repeatable.
#[derive(Debug)]
struct FailureInjection {
    rate: f64,
    rng: StdRng,
}

/// An in-process stand-in for the Stripe API (see the module docs). Cheap to share behind
/// an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct StripeDouble {
    /// Latest object per (tenant, object id), with the order it was first stored in.
    objects: Mutex<HashMap<(String, String), Stored>>,
    /// Events per (tenant, event id), for the event list.
    events: Mutex<HashMap<(String, String), Stored>>,
    /// API v2 events (`v2.core.event`, thin) per (tenant, event id), for the v2 list.
    v2_events: Mutex<HashMap<(String, String), Stored>>,
    /// Gives each new object or event its place in the order of creation.
    next_seq: AtomicU64,
    failures: Option<Mutex<FailureInjection>>,
    fetches: AtomicU64,
    injected: AtomicU64,
    /// How many times each (tenant, id) was served in a list page (for tests that check
    /// an object is imported once).
    listed: Mutex<BTreeMap<(String, String), u64>>,
}

/// A stored object or event and its place in the order of creation (lists are newest
/// first by `created`, then by this).
#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    value: Value,
}

impl StripeDouble {
    /// An empty double that never fails on its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty double that fails about `rate` (clamped to `0.0..=1.0`) of its fetches
    /// with [`HydrateError::Transient`], decided by a generator seeded with `seed`.
    pub fn with_transient_failures(rate: f64, seed: u64) -> Self {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        StripeDouble {
            failures: Some(Mutex::new(FailureInjection {
                rate,
                rng: StdRng::seed_from_u64(seed),
            })),
            ..Self::default()
        }
    }

    /// Store (or replace) `object` for `tenant`, keyed by its `id`.
    pub fn put(&self, tenant: &str, object: Value) -> Result<(), StripeDoubleError> {
        let Some(id) = object.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(StripeDoubleError::MissingId {
                tenant: tenant.to_owned(),
            });
        };
        insert(&self.objects, &self.next_seq, tenant, id, object);
        Ok(())
    }

    /// Store (or replace) `event` (a Stripe v1 event object) for `tenant`, keyed by its
    /// `id`, for the event list.
    pub fn put_event(&self, tenant: &str, event: Value) -> Result<(), StripeDoubleError> {
        let Some(id) = event.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(StripeDoubleError::MissingId {
                tenant: tenant.to_owned(),
            });
        };
        insert(&self.events, &self.next_seq, tenant, id, event);
        Ok(())
    }

    /// Store (or replace) `event` (a `v2.core.event`, whose `created` is RFC 3339) for
    /// `tenant`, keyed by its `id`, for the v2 event list (`GET /v2/core/events`).
    pub fn put_v2_event(&self, tenant: &str, event: Value) -> Result<(), StripeDoubleError> {
        let Some(id) = event.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(StripeDoubleError::MissingId {
                tenant: tenant.to_owned(),
            });
        };
        insert(&self.v2_events, &self.next_seq, tenant, id, event);
        Ok(())
    }

    /// How many times the object `id` of `tenant` was served in a list page.
    pub fn times_listed(&self, tenant: &str, id: &str) -> u64 {
        lock(&self.listed)
            .get(&(tenant.to_owned(), id.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Forget the list counts of [`Self::times_listed`].
    pub fn reset_listed(&self) {
        lock(&self.listed).clear();
    }

    /// Every object of `tenant` whose API collection is `collection` (e.g.
    /// `/v1/subscriptions`), newest first as Stripe lists them.
    pub fn objects_in(&self, tenant: &str, collection: &str) -> Vec<Value> {
        let objects = lock(&self.objects);
        let found = objects
            .iter()
            .filter(|((t, _), stored)| {
                t == tenant && collection_of(&stored.value).as_deref() == Some(collection)
            })
            .map(|(_, stored)| stored.clone())
            .collect();
        newest_first(found)
    }

    /// Every event of `tenant`, newest first.
    pub fn events_of(&self, tenant: &str) -> Vec<Value> {
        of_tenant(&self.events, tenant)
    }

    /// Every API v2 event of `tenant`, newest first.
    pub fn v2_events_of(&self, tenant: &str) -> Vec<Value> {
        of_tenant(&self.v2_events, tenant)
    }

    /// A stored API v2 event, if any.
    pub fn v2_event(&self, tenant: &str, id: &str) -> Option<Value> {
        lock(&self.v2_events)
            .get(&(tenant.to_owned(), id.to_owned()))
            .map(|stored| stored.value.clone())
    }

    /// Count `ids` of `tenant` as served in a list page.
    fn note_listed<'a>(&self, tenant: &str, ids: impl Iterator<Item = &'a str>) {
        let mut listed = lock(&self.listed);
        for id in ids {
            *listed
                .entry((tenant.to_owned(), id.to_owned()))
                .or_default() += 1;
        }
    }

    /// Store many `(tenant, object)` pairs, such as a generated stream's final objects.
    /// Stops at the first object without an id.
    pub fn put_all(
        &self,
        objects: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<(), StripeDoubleError> {
        objects
            .into_iter()
            .try_for_each(|(tenant, object)| self.put(&tenant, object))
    }

    /// Drop every object of `tenant` (a long demo frees each chunk's objects once it has
    /// been applied).
    pub fn forget_tenant(&self, tenant: &str) {
        lock(&self.objects).retain(|(t, _), _| t != tenant);
        lock(&self.events).retain(|(t, _), _| t != tenant);
        lock(&self.v2_events).retain(|(t, _), _| t != tenant);
    }

    /// The stored object, if any (no failure injection; for checks and tools).
    pub fn get(&self, tenant: &str, id: &str) -> Option<Value> {
        lock(&self.objects)
            .get(&(tenant.to_owned(), id.to_owned()))
            .map(|stored| stored.value.clone())
    }

    /// A stored event, if any.
    pub fn event(&self, tenant: &str, id: &str) -> Option<Value> {
        lock(&self.events)
            .get(&(tenant.to_owned(), id.to_owned()))
            .map(|stored| stored.value.clone())
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        lock(&self.objects).len()
    }

    /// Whether no object is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many fetches were made, failed ones included.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many fetches failed because of the injected failure rate.
    pub fn injected_failures(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn lookup(&self, tenant: &str, reference: &ObjectRef) -> Result<Value, HydrateError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        if let Some(failures) = &self.failures {
            let mut failures = lock(failures);
            let rate = failures.rate;
            if rate > 0.0 && failures.rng.random_bool(rate) {
                self.injected.fetch_add(1, Ordering::Relaxed);
                return Err(HydrateError::Transient {
                    object_id: reference.id.clone(),
                    message: "injected failure: 503 from the Stripe double".to_owned(),
                });
            }
        }
        self.get(tenant, &reference.id)
            .ok_or_else(|| HydrateError::Permanent {
                object_id: reference.id.clone(),
                code: "stripe_not_found",
                message: format!("no such {} for tenant {tenant}", reference.object_type),
            })
    }
}

impl Hydrator for StripeDouble {
    /// Serves the stored object. The Stripe-Context is ignored: the double keys objects
    /// by tenant, which already separates Connect accounts in the demo.
    fn fetch<'a>(
        &'a self,
        tenant: &'a str,
        reference: &'a ObjectRef,
        _context: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Value, HydrateError>> {
        future::ready(self.lookup(tenant, reference)).boxed()
    }
}

/// Store `value` under (tenant, id), keeping the place of a value it replaces.
fn insert(
    map: &Mutex<HashMap<(String, String), Stored>>,
    next_seq: &AtomicU64,
    tenant: &str,
    id: String,
    value: Value,
) {
    let mut map = lock(map);
    match map.get_mut(&(tenant.to_owned(), id.clone())) {
        Some(stored) => stored.value = value,
        None => {
            let seq = next_seq.fetch_add(1, Ordering::Relaxed);
            map.insert((tenant.to_owned(), id), Stored { seq, value });
        }
    }
}

/// Every value of `tenant` in `map`, newest first.
fn of_tenant(map: &Mutex<HashMap<(String, String), Stored>>, tenant: &str) -> Vec<Value> {
    let found = lock(map)
        .iter()
        .filter(|((t, _), _)| t == tenant)
        .map(|(_, stored)| stored.clone())
        .collect();
    newest_first(found)
}

/// Stripe's list order: newest `created` first; the same time, the later stored first.
fn newest_first(mut found: Vec<Stored>) -> Vec<Value> {
    found.sort_by_key(|s| std::cmp::Reverse((created_ms(&s.value), s.seq)));
    found.into_iter().map(|s| s.value).collect()
}

/// `created` in ms: whole seconds in API v1 objects, RFC 3339 in API v2 ones (0 when
/// absent or unreadable).
fn created_ms(value: &Value) -> i64 {
    match value.get("created") {
        Some(Value::Number(secs)) => secs.as_i64().unwrap_or(0).saturating_mul(1000),
        Some(Value::String(text)) => crate::ops::parse_time(text).unwrap_or(0),
        _ => 0,
    }
}

/// The API collection an object is listed under, e.g. `/v1/subscriptions`: the path the
/// worker fetches it from ([`crate::event::envelope::api_path`]) without the id.
fn collection_of(object: &Value) -> Option<String> {
    let object_type = object.get("object")?.as_str()?;
    let id = object.get("id")?.as_str()?;
    let path = crate::event::envelope::api_path(object_type, id)?;
    path.strip_suffix(id)?.strip_suffix('/').map(str::to_owned)
}

/// Lock a mutex, taking over the data if a holder panicked: the maps stay consistent
/// because every critical section is a single insert, read or generator step.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reference(id: &str) -> ObjectRef {
        ObjectRef {
            id: id.to_owned(),
            object_type: "subscription".to_owned(),
            url: None,
            customer: None,
        }
    }

    #[tokio::test]
    async fn serves_objects_per_tenant_and_404s_the_rest() {
        let double = StripeDouble::new();
        double
            .put("t1", json!({"id": "sub_1", "status": "active"}))
            .expect("has id");
        double
            .put("t2", json!({"id": "sub_1", "status": "canceled"}))
            .expect("has id");
        let got = double.fetch("t1", &reference("sub_1"), None).await;
        assert_eq!(got.ok().map(|v| v["status"].clone()), Some(json!("active")));
        let got = double.fetch("t2", &reference("sub_1"), None).await;
        assert_eq!(
            got.ok().map(|v| v["status"].clone()),
            Some(json!("canceled"))
        );
        match double.fetch("t3", &reference("sub_1"), None).await {
            Err(HydrateError::Permanent { code, .. }) => assert_eq!(code, "stripe_not_found"),
            other => panic!("expected not found, got {other:?}"),
        }
        assert_eq!(double.fetch_count(), 3);
    }

    #[test]
    fn objects_without_id_are_refused() {
        let double = StripeDouble::new();
        assert!(double.put("t", json!({"status": "x"})).is_err());
        assert!(double.is_empty());
    }

    #[tokio::test]
    async fn injected_failures_are_seeded_and_transient() {
        async fn run(seed: u64) -> Vec<bool> {
            let double = StripeDouble::with_transient_failures(0.3, seed);
            double.put("t", json!({"id": "sub_1"})).expect("has id");
            let mut outcomes = Vec::new();
            for _ in 0..200 {
                let r = double.fetch("t", &reference("sub_1"), None).await;
                if let Err(e) = &r {
                    assert!(matches!(e, HydrateError::Transient { .. }));
                }
                outcomes.push(r.is_ok());
            }
            outcomes
        }
        let a = run(7).await;
        assert_eq!(a, run(7).await);
        let failed = a.iter().filter(|ok| !**ok).count();
        assert!(
            (30..=90).contains(&failed),
            "{failed} of 200 failed at rate 0.3"
        );
    }
}
