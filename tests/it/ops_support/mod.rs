//! Helpers shared by the operations tests (`tests/ops.rs`, `tests/ops_aws.rs`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stripe_worker::app::cancel_when_idle;
use stripe_worker::backend::{Backend, DedupeStore, Queue, StateStore};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::stripe::hydrate::Hydrator;
use stripe_worker::worker::Worker;
use tokio_util::sync::CancellationToken;

/// A `customer.created` Stripe event.
pub fn customer_event(id: &str, customer: &str, email: &str, created: i64) -> Value {
    json!({
        "id": id, "object": "event", "type": "customer.created", "created": created,
        "livemode": false, "api_version": "2025-03-31.basil",
        "data": {"object": {"id": customer, "object": "customer", "email": email,
            "invoice_settings": {"default_payment_method": null}}}
    })
}

/// Tenant `acme`; with `mapped`, the partner destination `ed_acme` belongs to it too.
pub fn config(mapped: bool) -> Config {
    let mut config = Config::default();
    config.worker.wait_time_secs = 0;
    config.tenants.tenants = vec!["acme".into()];
    if mapped {
        config
            .tenants
            .destinations
            .insert("ed_acme".into(), "acme".into());
    }
    config
}

/// Run the worker pool on `backend` until its queues stay empty; the counters it kept.
pub async fn drain<Q: Queue, D: DedupeStore, S: StateStore, B>(
    backend: &Backend<Q, D, S, B>,
    config: &Config,
) -> stripe_worker::worker::StatsSnapshot {
    drain_with(backend, config, None).await
}

/// [`drain`] with `hydrator` for thin events and same-second ties.
pub async fn drain_with<Q: Queue, D: DedupeStore, S: StateStore, B>(
    backend: &Backend<Q, D, S, B>,
    config: &Config,
    hydrator: Option<Arc<dyn Hydrator>>,
) -> stripe_worker::worker::StatsSnapshot {
    let worker = Worker::build(config, backend, hydrator, system_clock());
    let stats = Arc::clone(worker.stats());
    let shutdown = CancellationToken::new();
    let idle = tokio::spawn(cancel_when_idle(
        Arc::clone(&backend.queues),
        Arc::clone(&stats),
        Duration::from_millis(300),
        shutdown.clone(),
    ));
    // A hang guard, not a speed check: on a loaded 2-core machine a moto drain of a
    // few hundred events has taken over two minutes.
    tokio::time::timeout(Duration::from_secs(600), worker.run(shutdown))
        .await
        .expect("the pool drains within ten minutes");
    idle.await.expect("idle watcher");
    stats.snapshot()
}
