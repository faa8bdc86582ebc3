//! The local event bus: what EventBridge does, in process. It wraps each entry in the
//! envelope EventBridge delivers, archives it, and applies the same routing patterns the
//! AWS rules use to put it on the domain queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{
    Archive, BackendError, BackendResult, Bus, BusEntry, PerDomain, PublishFailures, Queue,
};
use crate::clock::Clock;
use crate::domain::Domain;
use crate::event::envelope::envelope_json;
use crate::routing::Router;

/// The region stamped on locally delivered envelopes.
pub const LOCAL_REGION: &str = "local";

/// An EventBridge stand-in over the backend's own queues and archive.
pub struct LocalBus<Q, A> {
    router: Router,
    queues: Arc<PerDomain<Q>>,
    archive: Arc<A>,
    clock: Clock,
    routed: PerDomain<AtomicU64>,
    unrouted: AtomicU64,
}

/// How many events the bus delivered to each domain queue, and how many matched no rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoutedCounts {
    /// Delivered to the subscription queue.
    pub subscription: u64,
    /// Delivered to the payment queue.
    pub payment: u64,
    /// Delivered to the customer queue.
    pub customer: u64,
    /// Matched no rule (archived only).
    pub unrouted: u64,
}

impl<Q: Queue, A: Archive> LocalBus<Q, A> {
    /// A bus delivering into `queues` with the standard routing rules.
    pub fn new(queues: Arc<PerDomain<Q>>, archive: Arc<A>, clock: Clock) -> Self {
        LocalBus {
            router: Router::standard(),
            queues,
            archive,
            clock,
            routed: PerDomain::from_fn(|_| AtomicU64::new(0)),
            unrouted: AtomicU64::new(0),
        }
    }

    /// Counts of deliveries since this bus was created.
    pub fn routed(&self) -> RoutedCounts {
        let get = |d: Domain| self.routed.get(d).load(Ordering::Relaxed);
        RoutedCounts {
            subscription: get(Domain::Subscription),
            payment: get(Domain::Payment),
            customer: get(Domain::Customer),
            unrouted: self.unrouted.load(Ordering::Relaxed),
        }
    }

    /// Deliver one envelope (archive, then every matching queue).
    async fn deliver(&self, entry: &BusEntry) -> BackendResult<()> {
        let now = (self.clock)();
        let id = uuid::Uuid::new_v4().to_string();
        let envelope = envelope_json(entry, &id, now, LOCAL_REGION, None).map_err(|e| {
            BackendError::Permanent {
                operation: "PutEvents",
                message: e.to_string(),
            }
        })?;
        let domains = self.router.route(&envelope);
        let body = envelope.to_string();
        self.archive.append(&body, now).await?;
        if domains.is_empty() {
            self.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        for domain in domains {
            self.queues.get(domain).send(&body, Duration::ZERO).await?;
            self.routed.get(domain).fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// What [`LocalBus::replay`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayCounts {
    /// Archived envelopes in the window.
    pub archived: u64,
    /// Deliveries to queues (an envelope routed to two domains counts twice).
    pub delivered: u64,
    /// Envelopes that matched no rule (of the chosen domain).
    pub unrouted: u64,
}

impl<Q: Queue, A: Archive> LocalBus<Q, A> {
    /// Re-deliver the archived envelopes of `from_ms..to_ms`, as an EventBridge replay
    /// does: each with a new envelope id and `replay-name` set to `name`, through the
    /// same routing, to `only`'s queue when given, and not archived again. `progress`
    /// hears (envelopes done, envelopes in the window). An interruption leaves a prefix
    /// of the window replayed; replaying again is harmless (dedupe).
    pub async fn replay(
        &self,
        from_ms: i64,
        to_ms: i64,
        name: &str,
        only: Option<Domain>,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> BackendResult<ReplayCounts> {
        let archived = self.archive.range(from_ms, to_ms).await?;
        let mut counts = ReplayCounts {
            archived: archived.len() as u64,
            ..ReplayCounts::default()
        };
        progress(0, counts.archived);
        for (done, text) in archived.iter().enumerate() {
            let mut envelope: serde_json::Value =
                serde_json::from_str(text).map_err(|e| BackendError::Permanent {
                    operation: "replay",
                    message: format!("an archived envelope is not JSON: {e}"),
                })?;
            if let Some(obj) = envelope.as_object_mut() {
                obj.insert(
                    "id".into(),
                    serde_json::Value::String(uuid::Uuid::new_v4().to_string()),
                );
                obj.insert(
                    "replay-name".into(),
                    serde_json::Value::String(name.to_owned()),
                );
            }
            let domains: Vec<Domain> = self
                .router
                .route(&envelope)
                .into_iter()
                .filter(|d| only.is_none_or(|o| o == *d))
                .collect();
            if domains.is_empty() {
                counts.unrouted += 1;
            }
            let body = envelope.to_string();
            for domain in domains {
                self.queues.get(domain).send(&body, Duration::ZERO).await?;
                counts.delivered += 1;
            }
            progress(done as u64 + 1, counts.archived);
        }
        Ok(counts)
    }
}

impl<Q: Queue, A: Archive> Bus for LocalBus<Q, A> {
    async fn publish(&self, entries: &[BusEntry]) -> BackendResult<PublishFailures> {
        // Entries are delivered concurrently: the SQLite backend commits concurrent writes
        // together, and EventBridge promises no order within a batch either.
        let results =
            futures::future::join_all(entries.iter().map(|entry| self.deliver(entry))).await;
        let failed = results
            .into_iter()
            .enumerate()
            // A failure after some queues got the event makes the caller re-send it: those
            // queues then see it twice, and the dedupe store acknowledges the copy.
            .filter_map(|(index, result)| result.err().map(|error| (index, error)))
            .collect();
        Ok(PublishFailures { failed })
    }
}
