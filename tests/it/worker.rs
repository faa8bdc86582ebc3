//! The worker engine over the memory backend: `process_one` outcomes, and the pool's
//! handling of them (acks, DLQ, retries, drain).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use stripe_worker::backend::doubles::faults::Faulty;
use stripe_worker::backend::doubles::memory::{MemoryDedupe, MemoryQueue, MemoryState};
use stripe_worker::backend::{
    ApplyOutcome, Backend, BackendResult, Claim, DeadLetterOps, DedupeKey, DedupeStore, EventWrite,
    PerDomain, Queue, QueueSpec, Receipt, ReceivedMessage, StateRecord, StateStore, WriteOutcome,
    dlq_attributes,
};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::domain::Domain;
use stripe_worker::handlers::{Effect, Handler, HandlerError, StateChange};
use stripe_worker::worker::{Outcome, Processor, Worker};
use tokio_util::sync::CancellationToken;

/// A minimal customer handler, so these tests depend only on the engine.
struct Customers;

impl Handler for Customers {
    fn name(&self) -> &str {
        "test-customers"
    }
    fn domain(&self) -> Domain {
        Domain::Customer
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("customer.")
    }
    fn changes(&self, _: &str, object: &Value) -> Result<Vec<StateChange>, HandlerError> {
        let id = object["id"].as_str().ok_or_else(|| HandlerError {
            handler: "test-customers".into(),
            message: "no id".into(),
        })?;
        Ok(vec![StateChange {
            kind: "customer".into(),
            id: id.into(),
            customer: Some(id.into()),
            doc: json!({"id": id, "email": object["email"]}),
        }])
    }
}

fn config() -> Config {
    let mut config = Config::default();
    config.tenants.default_tenant = Some("acme".into());
    config.worker.wait_time_secs = 1;
    config.worker.visibility_timeout_secs = 2;
    config.worker.max_receive_count = 3;
    config.retry.visibility_backoff_base_secs = 1;
    config.retry.initial_delay_ms = 1;
    config.retry.max_delay_ms = 5;
    // At most half the visibility timeout, as validation requires.
    config.dedupe.lease_secs = 1;
    config
}

fn event(id: &str, customer: &str, email: &str, created: i64) -> String {
    json!({
        "id": id, "object": "event", "type": "customer.updated", "created": created,
        "livemode": false, "api_version": "2025-03-31.basil",
        "data": {"object": {"id": customer, "object": "customer", "email": email}}
    })
    .to_string()
}

fn message(body: String) -> ReceivedMessage {
    ReceivedMessage {
        message_id: "m1".into(),
        receipt: Receipt("r1".into()),
        body,
        receive_count: 1,
        sent_at_ms: 0,
        attributes: Default::default(),
    }
}

/// A worker with `handlers` over these queues and stores, built as `run` builds it.
fn worker<D: DedupeStore, S: StateStore>(
    queues: Arc<PerDomain<MemoryQueue>>,
    handlers: Vec<Arc<dyn Handler>>,
    dedupe: Arc<D>,
    state: Arc<S>,
    config: &Config,
) -> Worker<MemoryQueue, D, S> {
    let backend = Backend {
        queues,
        dedupe,
        state,
        bus: Arc::new(()),
    };
    Worker::builder(config, &backend, system_clock())
        .handlers(handlers)
        .build()
}

/// The processor of a [`Customers`] worker, for tests of one message's processing.
fn processor<D: DedupeStore, S: StateStore>(
    dedupe: Arc<D>,
    state: Arc<S>,
    config: &Config,
) -> Arc<Processor<D, S>> {
    let w = worker(
        queues(config),
        vec![Arc::new(Customers)],
        dedupe,
        state,
        config,
    );
    Arc::clone(w.processor())
}

/// A [`Customers`] worker over `queues`.
fn customers_worker<D: DedupeStore, S: StateStore>(
    queues: &Arc<PerDomain<MemoryQueue>>,
    dedupe: Arc<D>,
    state: Arc<S>,
    config: &Config,
) -> Worker<MemoryQueue, D, S> {
    worker(
        Arc::clone(queues),
        vec![Arc::new(Customers)],
        dedupe,
        state,
        config,
    )
}

#[tokio::test]
async fn applies_once_then_acknowledges_duplicates() {
    let state = Arc::new(MemoryState::new());
    let p = processor(Arc::new(MemoryDedupe::new()), Arc::clone(&state), &config());
    let body = event("evt_1", "cus_1", "a@example.com", 1_700_000_000);
    assert_eq!(
        p.process_one(Domain::Customer, &message(body.clone()))
            .await
            .outcome,
        Outcome::Applied { writes: 1 }
    );
    assert_eq!(
        p.process_one(Domain::Customer, &message(body))
            .await
            .outcome,
        Outcome::Duplicate
    );
    let record = state
        .get("acme", "customer", "cus_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.doc["email"], "a@example.com");
    assert_eq!(record.as_of_ms, 1_700_000_000_000);
}

#[tokio::test]
async fn an_older_event_arriving_late_does_not_overwrite_newer_state() {
    let state = Arc::new(MemoryState::new());
    let p = processor(Arc::new(MemoryDedupe::new()), Arc::clone(&state), &config());
    let newer = event("evt_new", "cus_1", "new@example.com", 1_700_000_100);
    let older = event("evt_old", "cus_1", "old@example.com", 1_700_000_000);
    assert_eq!(
        p.process_one(Domain::Customer, &message(newer))
            .await
            .outcome,
        Outcome::Applied { writes: 1 }
    );
    // Applied (its marker written) but the record was stale: nothing changed.
    assert_eq!(
        p.process_one(Domain::Customer, &message(older))
            .await
            .outcome,
        Outcome::Applied { writes: 0 }
    );
    let record = state
        .get("acme", "customer", "cus_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.doc["email"], "new@example.com");
}

#[tokio::test]
async fn poison_unknown_types_and_unknown_tenants_get_precise_outcomes() {
    let config = config();
    let p = processor(
        Arc::new(MemoryDedupe::new()),
        Arc::new(MemoryState::new()),
        &config,
    );
    let Outcome::DeadLetter(reason) = p
        .process_one(Domain::Customer, &message("{\"id\":".into()))
        .await
        .outcome
    else {
        panic!("truncated JSON must be dead-lettered")
    };
    assert_eq!(reason.kind, "invalid_json");

    let plan = json!({"id": "evt_p", "object": "event", "type": "plan.created", "created": 1,
        "livemode": false, "data": {"object": {"id": "plan_1", "object": "plan"}}});
    assert!(matches!(
        p.process_one(Domain::Customer, &message(plan.to_string()))
            .await
            .outcome,
        Outcome::Ignored { .. }
    ));

    // A configured tenant and no default: an empty tenant configuration would have the
    // implicit `default` tenant instead.
    let mut no_default = config.clone();
    no_default.tenants.default_tenant = None;
    no_default.tenants.tenants = vec!["acme".into()];
    let p = processor(
        Arc::new(MemoryDedupe::new()),
        Arc::new(MemoryState::new()),
        &no_default,
    );
    let outcome = p
        .process_one(Domain::Customer, &message(event("evt_t", "cus_1", "x", 1)))
        .await
        .outcome;
    let Outcome::DeadLetter(reason) = outcome else {
        panic!("unresolvable tenant: {outcome:?}")
    };
    assert_eq!(reason.kind, "unknown_tenant");
}

#[tokio::test]
async fn a_claim_held_elsewhere_leaves_the_message_for_later() {
    let dedupe = MemoryDedupe::new();
    let state = Arc::new(dedupe.state());
    let dedupe = Arc::new(dedupe);
    let key = DedupeKey {
        tenant: "acme".into(),
        handler: "test-customers".into(),
        dedupe_id: "evt_1".into(),
    };
    let now = stripe_worker::clock::now_ms();
    assert!(matches!(
        dedupe
            .claim(&key, now, Duration::from_secs(60))
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));
    let p = processor(Arc::clone(&dedupe), Arc::clone(&state), &config());
    let outcome = p
        .process_one(Domain::Customer, &message(event("evt_1", "cus_1", "x", 1)))
        .await
        .outcome;
    let Outcome::InProgressElsewhere { until_ms } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(until_ms >= now + 59_000);
    assert_eq!(state.get("acme", "customer", "cus_1").await.unwrap(), None);
}

#[tokio::test]
async fn a_thin_event_without_a_stripe_api_is_dead_lettered_with_a_reason() {
    let p = processor(
        Arc::new(MemoryDedupe::new()),
        Arc::new(MemoryState::new()),
        &config(),
    );
    let thin = json!({
        "version": "0", "id": "x", "detail-type": "v1.customer.updated",
        "source": "aws.partner/stripe.com/ed_1", "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {"id": "evt_thin", "object": "v2.core.event", "type": "v1.customer.updated",
            "created": "2026-01-01T00:00:00.000Z", "livemode": false, "context": null,
            "related_object": {"id": "cus_1", "type": "customer", "url": "/v1/customers/cus_1"}}
    });
    let outcome = p
        .process_one(Domain::Customer, &message(thin.to_string()))
        .await
        .outcome;
    let Outcome::DeadLetter(reason) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(reason.kind, "no_hydrator");
}

fn queues(config: &Config) -> Arc<PerDomain<MemoryQueue>> {
    Arc::new(PerDomain::from_fn(|d| {
        MemoryQueue::new(QueueSpec {
            name: format!("{d}-events"),
            visibility_timeout: config.visibility_timeout(),
            max_receive_count: config.worker.max_receive_count,
        })
    }))
}

/// Run `worker` over `queues` until they stay empty.
async fn drain<D: DedupeStore, S: StateStore>(
    queues: &Arc<PerDomain<MemoryQueue>>,
    worker: &Worker<MemoryQueue, D, S>,
) {
    let shutdown = CancellationToken::new();
    let idle = tokio::spawn(stripe_worker::app::cancel_when_idle(
        Arc::clone(queues),
        Arc::clone(worker.stats()),
        Duration::from_millis(300),
        shutdown.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(60), worker.clone().run(shutdown))
        .await
        .expect("the pool drains within a minute");
    idle.await.unwrap();
}

#[tokio::test]
async fn the_pool_applies_everything_exactly_once_under_transient_faults() {
    let config = config();
    let queues = queues(&config);
    let dedupe = Arc::new(Faulty::new(MemoryDedupe::new(), 0.2, 7));
    let state = Arc::new(Faulty::new(MemoryState::new(), 0.2, 8));
    let w = customers_worker(&queues, Arc::clone(&dedupe), Arc::clone(&state), &config);
    let p = Arc::clone(w.processor());
    let customer_queue = queues.get(Domain::Customer);
    for i in 0..300 {
        let body = event(
            &format!("evt_{i}"),
            &format!("cus_{}", i % 50),
            &format!("v{i}@x"),
            1_700_000_000 + i,
        );
        customer_queue.send(&body, Duration::ZERO).await.unwrap();
        if i % 3 == 0 {
            customer_queue.send(&body, Duration::ZERO).await.unwrap();
        }
    }
    customer_queue.send("poison", Duration::ZERO).await.unwrap();
    drain(&queues, &w).await;

    let stats = p.stats().snapshot();
    assert!(
        dedupe.injected() + state.injected() > 50,
        "faults were injected"
    );
    assert_eq!(stats.applied, 300, "{stats:?}");
    assert_eq!(stats.duplicates, 100, "{stats:?}");
    assert_eq!(stats.dead_letter_reasons.get("invalid_json"), Some(&1));
    for c in 0..50 {
        let record = state
            .inner()
            .get("acme", "customer", &format!("cus_{c}"))
            .await
            .unwrap()
            .unwrap();
        // The newest event of customer c is the largest i with i % 50 == c.
        assert_eq!(record.doc["email"], format!("v{}@x", 250 + c));
    }
    let (main, dlq) = customer_queue.stats().await.unwrap();
    assert_eq!((main.visible, main.in_flight, dlq.visible), (0, 0, 1));
}

/// A state store that always fails transiently.
struct Down;

impl StateStore for Down {
    async fn apply(&self, _: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        Err(stripe_worker::backend::BackendError::Transient {
            operation: "state.apply",
            message: "down".into(),
        })
    }
    async fn put_if_newer(&self, _: &StateRecord) -> BackendResult<WriteOutcome> {
        Err(stripe_worker::backend::BackendError::Transient {
            operation: "state.put",
            message: "down".into(),
        })
    }
    async fn get(&self, _: &str, _: &str, _: &str) -> BackendResult<Option<StateRecord>> {
        Ok(None)
    }
    async fn by_customer(&self, _: &str, _: &str) -> BackendResult<Vec<StateRecord>> {
        Ok(vec![])
    }
    async fn export(&self, _: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        Ok(vec![])
    }
}

#[tokio::test]
async fn a_message_that_keeps_failing_ends_in_the_dlq_with_retries_exhausted() {
    let config = config();
    let queues = queues(&config);
    let w = customers_worker(
        &queues,
        Arc::new(MemoryDedupe::new()),
        Arc::new(Down),
        &config,
    );
    let p = Arc::clone(w.processor());
    queues
        .get(Domain::Customer)
        .send(&event("evt_1", "cus_1", "x", 1), Duration::ZERO)
        .await
        .unwrap();
    drain(&queues, &w).await;
    let dead = queues
        .get(Domain::Customer)
        .dlq_peek(10)
        .await
        .expect("dlq_peek");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0]
            .attributes
            .get(dlq_attributes::ERROR_KIND)
            .map(String::as_str),
        Some("retries_exhausted")
    );
    assert_eq!(p.stats().snapshot().applied, 0);
}

/// A state store that blocks writes until opened, to hold messages in flight.
struct Gate {
    inner: MemoryState,
    open: AtomicBool,
}

impl StateStore for Gate {
    async fn apply(&self, write: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        while !self.open.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.apply(write).await
    }
    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        while !self.open.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.put_if_newer(record).await
    }
    async fn get(&self, t: &str, k: &str, i: &str) -> BackendResult<Option<StateRecord>> {
        self.inner.get(t, k, i).await
    }
    async fn by_customer(&self, t: &str, c: &str) -> BackendResult<Vec<StateRecord>> {
        self.inner.by_customer(t, c).await
    }
    async fn export(&self, t: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        self.inner.export(t).await
    }
}

#[tokio::test]
async fn shutdown_releases_what_cannot_finish_within_the_grace_period() {
    let mut config = config();
    config.worker.shutdown_grace_secs = 1;
    // Long enough that only the release can make the messages visible again in time.
    config.worker.visibility_timeout_secs = 30;
    let queues = queues(&config);
    let state = Arc::new(Gate {
        inner: MemoryState::new(),
        open: AtomicBool::new(false),
    });
    let w = customers_worker(
        &queues,
        Arc::new(MemoryDedupe::new()),
        Arc::clone(&state),
        &config,
    );
    let p = Arc::clone(w.processor());
    for i in 0..5 {
        queues
            .get(Domain::Customer)
            .send(&event(&format!("evt_{i}"), "cus_1", "x", i), Duration::ZERO)
            .await
            .unwrap();
    }
    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(w.clone().run(shutdown.clone()));
    while p.stats().in_flight() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), pool)
        .await
        .expect("drain ends after the grace period")
        .unwrap();
    assert_eq!(p.stats().snapshot().released, 5);
    // Released means visible again at once, not after the 30 s visibility timeout.
    let (main, _) = queues.get(Domain::Customer).stats().await.unwrap();
    assert_eq!((main.visible, main.in_flight), (5, 0));

    // A second run with the gate open applies them all at once: nothing was claimed, so
    // nothing holds them.
    state.open.store(true, Ordering::Relaxed);
    drain(&queues, &w).await;
    assert_eq!(p.stats().snapshot().applied, 5);
}

#[tokio::test]
async fn shutdown_lets_in_flight_messages_finish_within_the_grace_period() {
    let mut config = config();
    config.worker.shutdown_grace_secs = 10;
    let queues = queues(&config);
    let state = Arc::new(Gate {
        inner: MemoryState::new(),
        open: AtomicBool::new(false),
    });
    let w = customers_worker(
        &queues,
        Arc::new(MemoryDedupe::new()),
        Arc::clone(&state),
        &config,
    );
    let p = Arc::clone(w.processor());
    for i in 0..5 {
        queues
            .get(Domain::Customer)
            .send(
                &event(&format!("evt_{i}"), &format!("cus_{i}"), "x", i),
                Duration::ZERO,
            )
            .await
            .unwrap();
    }
    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(w.clone().run(shutdown.clone()));
    while p.stats().in_flight() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    state.open.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(10), pool)
        .await
        .unwrap()
        .unwrap();
    let stats = p.stats().snapshot();
    assert_eq!((stats.applied, stats.released), (5, 0));
    let (main, _) = queues.get(Domain::Customer).stats().await.unwrap();
    assert_eq!(
        (main.visible, main.in_flight),
        (0, 0),
        "acknowledgements were flushed"
    );
}

/// A test-only handler with an effect outside the store: the effect waits for the test to
/// let it finish, and counts its runs.
struct Notifier {
    started: tokio::sync::Notify,
    finish: AtomicBool,
    runs: std::sync::atomic::AtomicUsize,
}

impl Notifier {
    fn new() -> Arc<Notifier> {
        Arc::new(Notifier {
            started: tokio::sync::Notify::new(),
            finish: AtomicBool::new(false),
            runs: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

impl Handler for Notifier {
    fn name(&self) -> &str {
        "test-notifier"
    }
    fn domain(&self) -> Domain {
        Domain::Customer
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("customer.")
    }
    fn changes(&self, event_type: &str, object: &Value) -> Result<Vec<StateChange>, HandlerError> {
        Customers.changes(event_type, object)
    }
    fn acts_outside_store(&self) -> bool {
        true
    }
    fn effect<'a>(&'a self, _: &'a str, _: &'a Value) -> Effect<'a> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            self.started.notify_one();
            while !self.finish.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        })
    }
}

/// A worker with `handler` over `queues` and stores that share their markers and claims.
fn lease_worker(
    queues: &Arc<PerDomain<MemoryQueue>>,
    handler: Arc<Notifier>,
    dedupe: &Arc<MemoryDedupe>,
    state: &Arc<MemoryState>,
    config: &Config,
) -> Worker<MemoryQueue, MemoryDedupe, MemoryState> {
    worker(
        Arc::clone(queues),
        vec![handler],
        Arc::clone(dedupe),
        Arc::clone(state),
        config,
    )
}

/// The processor of a [`lease_worker`], for tests of one message's processing.
fn lease_processor(
    handler: Arc<Notifier>,
    dedupe: &Arc<MemoryDedupe>,
    state: &Arc<MemoryState>,
    config: &Config,
) -> Arc<Processor<MemoryDedupe, MemoryState>> {
    Arc::clone(lease_worker(&queues(config), handler, dedupe, state, config).processor())
}

fn lease_stores() -> (Arc<MemoryDedupe>, Arc<MemoryState>) {
    let dedupe = MemoryDedupe::new();
    let state = Arc::new(dedupe.state());
    (Arc::new(dedupe), state)
}

fn notifier_key(event_id: &str) -> DedupeKey {
    DedupeKey {
        tenant: "acme".into(),
        handler: "test-notifier".into(),
        dedupe_id: event_id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_handler_keeps_its_claim_while_its_effect_runs() {
    let mut config = config();
    // Leases of seconds, renewed every second, so a loaded machine does not lose them.
    config.worker.visibility_timeout_secs = 6;
    config.dedupe.lease_secs = 3;
    let (dedupe, state) = lease_stores();
    let handler = Notifier::new();
    let first = lease_processor(Arc::clone(&handler), &dedupe, &state, &config);
    let second = lease_processor(Arc::clone(&handler), &dedupe, &state, &config);
    let body = event("evt_1", "cus_1", "a@example.com", 1_700_000_000);
    let started = handler.started.notified();
    let running = tokio::spawn({
        let first = Arc::clone(&first);
        let body = body.clone();
        async move {
            first
                .process_one(Domain::Customer, &message(body))
                .await
                .outcome
        }
    });
    started.await;
    // Past the first lease: only its renewals keep the second worker out.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let outcome = second
        .process_one(Domain::Customer, &message(body.clone()))
        .await
        .outcome;
    assert!(
        matches!(outcome, Outcome::InProgressElsewhere { .. }),
        "{outcome:?}"
    );
    handler.finish.store(true, Ordering::SeqCst);
    assert_eq!(running.await.unwrap(), Outcome::Applied { writes: 1 });
    assert_eq!(
        second
            .process_one(Domain::Customer, &message(body))
            .await
            .outcome,
        Outcome::Duplicate
    );
    assert_eq!(
        handler.runs.load(Ordering::SeqCst),
        1,
        "the effect ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_handler_that_lost_its_claim_writes_nothing() {
    let config = config();
    let (dedupe, state) = lease_stores();
    let handler = Notifier::new();
    let p = lease_processor(Arc::clone(&handler), &dedupe, &state, &config);
    let started = handler.started.notified();
    let running = tokio::spawn({
        let p = Arc::clone(&p);
        async move {
            p.process_one(Domain::Customer, &message(event("evt_1", "cus_1", "x", 1)))
                .await
                .outcome
        }
    });
    started.await;
    // Another worker takes the claim over, as it may once a lease has run out (here its
    // clock says so).
    let later = stripe_worker::clock::now_ms() + 60_000;
    assert!(matches!(
        dedupe
            .claim(&notifier_key("evt_1"), later, Duration::from_secs(60))
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));
    handler.finish.store(true, Ordering::SeqCst);
    match running.await.unwrap() {
        Outcome::RetryLater { kind, .. } => assert_eq!(kind, "lease_lost"),
        other => panic!("expected a retry after the lost lease, got {other:?}"),
    }
    assert_eq!(state.get("acme", "customer", "cus_1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_stop_releases_the_claim_of_a_lease_handler() {
    let mut config = config();
    config.worker.shutdown_grace_secs = 1;
    // Long, so that only the release makes the claim and the message available at once.
    config.worker.visibility_timeout_secs = 60;
    config.dedupe.lease_secs = 30;
    let queues = queues(&config);
    let (dedupe, state) = lease_stores();
    let handler = Notifier::new();
    let w = lease_worker(&queues, Arc::clone(&handler), &dedupe, &state, &config);
    let p = Arc::clone(w.processor());
    queues
        .get(Domain::Customer)
        .send(&event("evt_1", "cus_1", "x", 1), Duration::ZERO)
        .await
        .unwrap();
    let started = handler.started.notified();
    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(w.clone().run(shutdown.clone()));
    started.await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), pool)
        .await
        .expect("the drain ends after the grace period")
        .unwrap();
    assert_eq!(p.stats().snapshot().released, 1);
    let now = stripe_worker::clock::now_ms();
    assert!(
        matches!(
            dedupe
                .claim(&notifier_key("evt_1"), now, Duration::from_secs(30))
                .await
                .unwrap(),
            Claim::Claimed(_)
        ),
        "the claim was released, not left to run out"
    );
    assert_eq!(state.get("acme", "customer", "cus_1").await.unwrap(), None);
}
