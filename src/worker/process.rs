//! `process_one`: one message in, one [`Processed`] (its [`Outcome`]) out. The pool drives
//! this step for every message (the demo, the bench and the tests run the pool, or call
//! it directly); it never touches the queue.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::Retryable;
use serde_json::Value;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing::field::Empty;

use super::{Outcome, RetryPolicy, WorkerStats};
use crate::backend::{
    ApplyOutcome, BackendError, Claim, DedupeKey, DedupeStore, EventWrite, Marker, ReceivedMessage,
    StateRecord, StateStore, WriteOutcome,
};
use crate::clock::Clock;
use crate::config::{Config, HydrateMode};
use crate::domain::Domain;
use crate::event::{EventObject, NormalisedEvent, ObjectRef, decode_message, envelope};
use crate::handlers::Handler;
use crate::reconcile::ties::{Tie, resolve_tie};
use crate::stripe::hydrate::{HydrateError, Hydrator};
use crate::telemetry::metrics::{self, time_backend};
use crate::telemetry::trace::{MESSAGING_SYSTEM_SQS, StoreSpans, continue_trace};
use crate::tenant::TenantConfig;

/// A replay whose name starts with this re-applies events the dedupe store says are done,
/// as [`ProcessSettings::reprocess`] does for every event. The marker is the replay name
/// because it is the one thing EventBridge carries from `StartReplay` into every replayed
/// envelope (`replay-name`); the embedded replay stamps it the same way. Safe because
/// state writes are ordered by as-of: re-applying an event never moves state backwards.
pub const REPROCESS_REPLAY_PREFIX: &str = "reprocess-";

/// Whether `event` asks to be re-applied even if already done (see
/// [`REPROCESS_REPLAY_PREFIX`]).
pub fn wants_reprocess(event: &NormalisedEvent) -> bool {
    event
        .replay_name
        .as_deref()
        .is_some_and(|name| name.starts_with(REPROCESS_REPLAY_PREFIX))
}

/// The span of one message's processing: the OTel messaging `process` span (consumer),
/// with the event's attributes recorded once it is decoded. It is a debug span, so with
/// export off it is disabled at its call site and costs nothing. The queue's name
/// (`messaging.destination.name`, and the span name `process <queue>`) is recorded by
/// the pool, which knows it; until then the span is named after the domain.
fn process_span(domain: &str, message: &ReceivedMessage) -> tracing::Span {
    tracing::debug_span!(
        "process",
        otel.name = %format_args!("process {domain}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = MESSAGING_SYSTEM_SQS,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = Empty,
        messaging.message.id = message.message_id.as_str(),
        stripe_worker.receive_count = i64::from(message.receive_count),
        stripe_worker.domain = Empty,
        stripe.event.id = Empty,
        stripe.event.type = Empty,
        stripe_worker.tenant = Empty,
        stripe_worker.source = Empty,
        stripe_worker.payload_style = Empty,
        stripe_worker.outcome = Empty,
        stripe_worker.reason = Empty,
    )
}

/// Record the decoded event on the message's span, continuing the trace it carries.
fn record_event(span: &tracing::Span, event: &NormalisedEvent) {
    continue_trace(span, event.traceparent.as_deref());
    span.record("stripe.event.id", event.event_id.as_str());
    span.record("stripe.event.type", event.event_type.as_str());
    span.record("stripe_worker.source", event.source.label());
    span.record(
        "stripe_worker.payload_style",
        match event.payload_style {
            crate::event::PayloadStyle::Snapshot => "snapshot",
            crate::event::PayloadStyle::Thin => "thin",
        },
    );
}

/// Record the message's outcome on its span.
fn record_outcome(span: &tracing::Span, outcome: &Outcome) {
    span.record("stripe_worker.outcome", outcome.label());
    match outcome {
        Outcome::DeadLetter(reason) => {
            span.record("stripe_worker.reason", reason.kind.as_str());
            span.record("otel.status_code", "ERROR");
        }
        Outcome::RetryLater { kind, .. } => {
            span.record("stripe_worker.reason", *kind);
            span.record("otel.status_code", "ERROR");
        }
        Outcome::Ignored { reason } => {
            span.record("stripe_worker.reason", *reason);
        }
        _ => {}
    }
}

/// What processing one message gave: its outcome, for the pool to settle, and what the
/// pool's concurrency limit learns from it.
#[derive(Debug)]
pub struct Processed {
    /// What the pool does with the message.
    pub outcome: Outcome,
    /// Throttling errors the message's steps met, retried or not: each tightens the
    /// queue's adaptive limit.
    pub throttles: u32,
    /// The message's `process` span, which the settlement continues.
    pub span: tracing::Span,
}

/// One message's in-process retry budget (its start) and what its retries met.
struct Budget {
    started: tokio::time::Instant,
    throttles: AtomicU32,
}

impl Budget {
    fn new() -> Self {
        Budget {
            started: tokio::time::Instant::now(),
            throttles: AtomicU32::new(0),
        }
    }
}

/// The settings `process_one` needs.
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    /// Lease per claim, for handlers that act outside the store (renewed while they run).
    pub lease: Duration,
    /// How long applied events are remembered.
    pub retention: Duration,
    /// In-process retries.
    pub retry: RetryPolicy,
    /// When to fetch objects from the Stripe API.
    pub hydrate: HydrateMode,
    /// Re-apply events the dedupe store says are done (replay `--reprocess`): safe because
    /// state writes are ordered by as-of.
    pub reprocess: bool,
    /// The `db.*` attributes of the store spans; set by the command that picks the backend.
    pub store: StoreSpans,
}

impl ProcessSettings {
    /// The settings a configuration describes.
    pub fn from_config(config: &Config) -> Self {
        ProcessSettings {
            lease: Duration::from_secs(config.dedupe.lease_secs),
            retention: Duration::from_secs(config.dedupe.retention_days * 86_400),
            retry: RetryPolicy::from_config(config),
            hydrate: config.hydrate.mode,
            reprocess: false,
            store: StoreSpans::default(),
        }
    }
}

/// Everything needed to process a message: handlers, stores, tenants, hydrator, clock.
pub struct Processor<D, S> {
    handlers: Vec<Arc<dyn Handler>>,
    dedupe: Arc<D>,
    state: Arc<S>,
    hydrator: Option<Arc<dyn Hydrator>>,
    tenants: TenantConfig,
    settings: ProcessSettings,
    clock: Clock,
    stats: Arc<WorkerStats>,
    /// Releases of claims whose work was cut short, still running (see
    /// [`Self::finish_releases`]).
    releases: TaskTracker,
}

/// A failed I/O step inside `process_one`.
#[derive(Debug, Clone, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Hydrate(#[from] HydrateError),
}

impl StepError {
    /// Whether the step may succeed if tried again in process. A Stripe API call is
    /// never retried here: the client has its own retries, which honour `Retry-After`
    /// and its key's rate limit (one retry layer); a transient failure after them
    /// becomes a later delivery of the message.
    fn is_retryable(&self) -> bool {
        match self {
            StepError::Backend(e) => e.is_retryable(),
            StepError::Hydrate(_) => false,
        }
    }

    /// What the message's outcome is when the step gives up.
    fn into_outcome(self, handler: &str) -> Outcome {
        match self {
            StepError::Backend(e) if e.is_retryable() => Outcome::RetryLater {
                kind: e.operation(),
                message: e.to_string(),
            },
            StepError::Hydrate(HydrateError::Transient { object_id, message }) => {
                Outcome::RetryLater {
                    kind: "hydrate",
                    message: format!("fetching {object_id}: {message}"),
                }
            }
            StepError::Hydrate(HydrateError::Permanent { code, message, .. }) => {
                Outcome::dead_letter(code, message, Some(handler))
            }
            StepError::Backend(e) => {
                Outcome::dead_letter("backend_error", e.to_string(), Some(handler))
            }
        }
    }
}

impl<D: DedupeStore, S: StateStore> Processor<D, S> {
    /// A processor over these handlers and stores ([`super::WorkerBuilder::build`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        handlers: Vec<Arc<dyn Handler>>,
        dedupe: Arc<D>,
        state: Arc<S>,
        hydrator: Option<Arc<dyn Hydrator>>,
        tenants: TenantConfig,
        settings: ProcessSettings,
        clock: Clock,
        stats: Arc<WorkerStats>,
    ) -> Self {
        Processor {
            handlers,
            dedupe,
            state,
            hydrator,
            tenants,
            settings,
            clock,
            stats,
            releases: TaskTracker::new(),
        }
    }

    /// Wait (up to `within`) for the releases of claims whose work was cut short, such as
    /// by the pool's hard stop, so the next worker can claim those events at once.
    pub async fn finish_releases(&self, within: Duration) {
        self.releases.close();
        if tokio::time::timeout(within, self.releases.wait())
            .await
            .is_err()
        {
            tracing::warn!("claim releases still running; their leases will expire instead");
        }
        self.releases.reopen();
    }

    /// The counters this processor updates.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The settings this processor runs with.
    pub fn settings(&self) -> &ProcessSettings {
        &self.settings
    }

    /// The clock this processor reads.
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Decode, resolve the tenant, and run every handler of `domain` that acts on the
    /// event, each at most once per event (its applied-marker and its state writes commit
    /// together), writing state newest-wins. The one entry into processing: the pool,
    /// the demo, the bench and the tests all come through here.
    pub async fn process_one(&self, domain: Domain, message: &ReceivedMessage) -> Processed {
        let span = process_span(domain.as_str(), message);
        let budget = Budget::new();
        span.record("stripe_worker.domain", domain.as_str());
        let outcome = match decode_message(message.body.as_bytes()) {
            Ok(event) => {
                record_event(&span, &event);
                let lag_ms = self.now_ms() - event.created_ms;
                metrics::get().event_lag(
                    domain.as_str(),
                    event.source.label(),
                    lag_ms as f64 / 1000.0,
                );
                self.process_event(domain, &event, &budget)
                    .instrument(span.clone())
                    .await
            }
            Err(e) => Outcome::dead_letter(e.reason(), e.to_string(), None),
        };
        record_outcome(&span, &outcome);
        Processed {
            outcome,
            throttles: budget.throttles.into_inner(),
            span,
        }
    }

    /// [`Self::process_one`] once the message is decoded.
    async fn process_event(
        &self,
        domain: Domain,
        event: &NormalisedEvent,
        budget: &Budget,
    ) -> Outcome {
        let handlers: Vec<&Arc<dyn Handler>> = self
            .handlers
            .iter()
            .filter(|h| h.domain() == domain && h.handles(&event.event_type))
            .collect();
        if handlers.is_empty() {
            return Outcome::Ignored {
                reason: "no_handler_for_type",
            };
        }
        let tenant = match self.tenants.resolve(event) {
            Ok(tenant) => tenant,
            Err(e) => return Outcome::dead_letter(e.reason(), e.to_string(), None),
        };
        tracing::Span::current().record("stripe_worker.tenant", tenant.as_str());
        let mut object: Option<(Value, i64)> = None;
        let mut writes = 0;
        let mut applied_any = false;
        for handler in handlers {
            let key = DedupeKey {
                tenant: tenant.clone(),
                handler: handler.name().to_owned(),
                dedupe_id: event.dedupe_id.clone(),
            };
            match self
                .apply_once(handler.as_ref(), &key, event, &mut object, budget)
                .await
            {
                Ok(Some(n)) => {
                    applied_any = true;
                    writes += n;
                }
                Ok(None) => {}
                Err(outcome) => return outcome,
            }
        }
        if applied_any {
            Outcome::Applied { writes }
        } else {
            Outcome::Duplicate
        }
    }

    /// Apply one handler's share of an event. `Ok(None)` is a duplicate; `Err` carries the
    /// message's outcome when this handler cannot finish.
    async fn apply_once(
        &self,
        handler: &dyn Handler,
        key: &DedupeKey,
        event: &NormalisedEvent,
        object: &mut Option<(Value, i64)>,
        budget: &Budget,
    ) -> Result<Option<usize>, Outcome> {
        if handler.acts_outside_store() {
            return self.apply_leased(handler, key, event, object, budget).await;
        }
        // No claim and no lease: the marker and the records commit together, so a crash
        // anywhere leaves the event applied (the next receive is a duplicate) or not.
        let records = self.records_of(handler, key, event, object, budget).await?;
        let marker = if self.reprocessing(event) {
            Marker::Overwrite
        } else {
            Marker::IfAbsent
        };
        self.commit(handler, key, marker, &records, budget).await
    }

    /// [`Self::apply_once`] for a handler that acts outside the store: claim the event,
    /// keep the claim renewed while the effect runs, and write only while it still holds.
    async fn apply_leased(
        &self,
        handler: &dyn Handler,
        key: &DedupeKey,
        event: &NormalisedEvent,
        object: &mut Option<(Value, i64)>,
        budget: &Budget,
    ) -> Result<Option<usize>, Outcome> {
        let lease = self.settings.lease;
        let claim = self
            .retrying(budget, "dedupe_claim", || {
                time_backend("dedupe_claim", self.dedupe.claim(key, self.now_ms(), lease))
            })
            .instrument(tracing::debug_span!(
                "dedupe claim",
                otel.kind = "client",
                stripe_worker.handler = handler.name(),
                db.system.name = self.settings.store.system,
                db.collection.name = self.settings.store.dedupe.as_deref(),
                db.operation.name = self.settings.store.operations.map(|(claim, _)| claim),
            ))
            .await
            .map_err(|e| StepError::from(e).into_outcome(handler.name()))?;
        let token = match claim {
            Claim::Claimed(token) => token,
            Claim::AlreadyDone if !self.reprocessing(event) => return Ok(None),
            // Reprocessing re-applies the state only: the effect happened the first time.
            Claim::AlreadyDone => {
                let records = self.records_of(handler, key, event, object, budget).await?;
                return self
                    .commit(handler, key, Marker::Overwrite, &records, budget)
                    .await;
            }
            Claim::InProgressElsewhere { until_ms } => {
                return Err(Outcome::InProgressElsewhere { until_ms });
            }
        };
        // Released if this future ends any other way than a commit, dropped by the pool's
        // hard stop included.
        let mut held = super::lease::HeldClaim::new(
            Arc::clone(&self.dedupe),
            key.clone(),
            token.clone(),
            &self.releases,
        );
        let work = async {
            let records = self.records_of(handler, key, event, object, budget).await?;
            if let Some((object, _)) = object.as_ref() {
                handler
                    .effect(&event.event_type, object)
                    .instrument(tracing::debug_span!(
                        "effect",
                        stripe_worker.handler = handler.name()
                    ))
                    .await
                    .map_err(|e| effect_outcome(handler.name(), e))?;
            }
            self.commit(handler, key, Marker::Fenced(&token), &records, budget)
                .await
        };
        let result = tokio::select! {
            result = work => result,
            lost = held.keep(lease, &self.clock) => Err(lost),
        };
        if result.is_ok() {
            // Committed: the claim became the applied-marker, nothing left to release.
            held.disarm();
        }
        result
    }

    /// Whether `event` is to be re-applied even if already applied.
    fn reprocessing(&self, event: &NormalisedEvent) -> bool {
        self.settings.reprocess || wants_reprocess(event)
    }

    /// Get the object (hydrating if needed) and turn it into the handler's records.
    async fn records_of(
        &self,
        handler: &dyn Handler,
        key: &DedupeKey,
        event: &NormalisedEvent,
        object: &mut Option<(Value, i64)>,
        budget: &Budget,
    ) -> Result<Vec<StateRecord>, Outcome> {
        if object.is_none() {
            *object = Some(
                self.object_of(&key.tenant, event, budget)
                    .await
                    .map_err(|e| e.into_outcome(handler.name()))?,
            );
        }
        let Some((object, as_of_ms)) = object.as_ref() else {
            unreachable!("the object was fetched just above")
        };
        let changes = tracing::debug_span!("handler", stripe_worker.handler = handler.name())
            .in_scope(|| handler.changes(&event.event_type, object))
            .map_err(|e| {
                Outcome::dead_letter("handler_error", e.to_string(), Some(handler.name()))
            })?;
        let mut records: Vec<StateRecord> = Vec::with_capacity(changes.len());
        for change in changes {
            // One write per record: a record named twice keeps its first version, as two
            // newer-wins writes of the same version would.
            if records
                .iter()
                .any(|r| r.kind == change.kind && r.id == change.id)
            {
                continue;
            }
            records.push(StateRecord {
                tenant: key.tenant.clone(),
                kind: change.kind,
                id: change.id,
                customer: change.customer,
                as_of_ms: *as_of_ms,
                tiebreak: event.dedupe_id.clone(),
                doc: change.doc,
            });
        }
        // Same-second ties with another event's record become the object fetched now
        // (crate::reconcile::ties). Decided before the apply, so the marker and the records
        // stay one transaction; an event of the same second applied between this read and
        // the apply falls to the tiebreak, as without an API key. `tie_check` times the
        // read and, on a tie, the fetch.
        let tie = Tie {
            hydrator: self.hydrator.as_deref(),
            handler,
            event_type: &event.event_type,
            connect_account: event.connect_account.as_deref(),
            clock: &self.clock,
        };
        let mut resolved = Vec::with_capacity(records.len());
        for record in records {
            let record = self
                .retrying(budget, "tie_check", || {
                    time_backend(
                        "tie_check",
                        resolve_tie::<_, StepError>(self.state.as_ref(), &record, &tie),
                    )
                })
                .await
                .map_err(|e| e.into_outcome(handler.name()))?;
            resolved.push(record);
        }
        Ok(resolved)
    }

    /// Write the marker and the records in one apply; the number of records written.
    async fn commit(
        &self,
        handler: &dyn Handler,
        key: &DedupeKey,
        marker: Marker<'_>,
        records: &[StateRecord],
        budget: &Budget,
    ) -> Result<Option<usize>, Outcome> {
        let store = &self.settings.store;
        let write_span = tracing::debug_span!(
            "state write",
            otel.kind = "client",
            stripe_worker.handler = handler.name(),
            db.system.name = store.system,
            db.collection.name = store.state.as_deref(),
            db.operation.name = store.operations.map(|(_, write)| write),
            aws.dynamodb.table_names = store.write_tables.as_deref(),
            stripe_worker.changes = records.len() as i64,
            stripe_worker.written = Empty,
        );
        let retention = self.settings.retention;
        let applied = self
            .retrying(budget, "state_write", || {
                let write = EventWrite {
                    key,
                    marker,
                    now_ms: self.now_ms(),
                    retention,
                    records,
                };
                async move { time_backend("state_write", self.state.apply(&write)).await }
            })
            .instrument(write_span.clone())
            .await;
        match applied {
            Ok(ApplyOutcome::Applied(outcomes)) => {
                let writes = outcomes
                    .iter()
                    .filter(|o| **o == WriteOutcome::Written)
                    .count();
                write_span.record("stripe_worker.written", writes as i64);
                log_applied(key, writes);
                Ok(Some(writes))
            }
            Ok(ApplyOutcome::Duplicate) => Ok(None),
            Ok(ApplyOutcome::HeldElsewhere { until_ms }) => {
                Err(Outcome::InProgressElsewhere { until_ms })
            }
            // Another worker took the claim over: its apply is the one that counts, and the
            // message comes back as a duplicate once it is done.
            Err(BackendError::LeaseLost { .. }) => Err(Outcome::RetryLater {
                kind: "lease_lost",
                message: format!(
                    "handler {}: the claim on {} was taken over; nothing written",
                    handler.name(),
                    key.storage_key()
                ),
            }),
            Err(e) => Err(StepError::from(e).into_outcome(handler.name())),
        }
    }

    /// The object to apply and its as-of: the snapshot and the event's `created`, or the
    /// fetched current object and the fetch time.
    async fn object_of(
        &self,
        tenant: &str,
        event: &NormalisedEvent,
        budget: &Budget,
    ) -> Result<(Value, i64), StepError> {
        let reference = match (&event.object, self.settings.hydrate) {
            (EventObject::Full { object }, HydrateMode::Thin) => {
                return Ok((object.clone(), event.created_ms));
            }
            // Nothing to fetch: the API serves no current version of it.
            (EventObject::Full { object }, HydrateMode::Always)
                if !envelope::retrievable(object) =>
            {
                return Ok((object.clone(), event.created_ms));
            }
            (EventObject::Full { object }, HydrateMode::Always) => reference_to(object)
                .ok_or_else(|| HydrateError::Permanent {
                    object_id: String::new(),
                    code: "missing_object",
                    message: "the snapshot object has no id or type to fetch".to_owned(),
                })?,
            (EventObject::Reference(reference), _) => reference.clone(),
        };
        let Some(hydrator) = &self.hydrator else {
            return Err(StepError::Hydrate(HydrateError::Permanent {
                object_id: reference.id.clone(),
                code: "no_hydrator",
                message: "a thin event needs the Stripe API, and none is configured".to_owned(),
            }));
        };
        let context = event.connect_account.as_deref();
        let fetched_at = self.now_ms();
        let object = self
            .retrying(budget, "hydrate", || {
                time_backend("hydrate", hydrator.fetch(tenant, &reference, context))
            })
            .instrument(tracing::debug_span!(
                "hydrate",
                otel.kind = "client",
                stripe.object.type = reference.object_type.as_str(),
            ))
            .await?;
        Ok((object, fetched_at))
    }

    /// Run `step` (the backend `operation`), retrying transient failures in process within
    /// what is left of the message's budget.
    async fn retrying<T, E, F, Fut>(
        &self,
        budget: &Budget,
        operation: &'static str,
        step: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<StepError> + Clone,
    {
        let remaining = self
            .settings
            .retry
            .budget
            .saturating_sub(budget.started.elapsed());
        step.retry(self.settings.retry.backoff(remaining))
            .sleep(tokio::time::sleep)
            .when(|e: &E| {
                let error: StepError = e.clone().into();
                if let StepError::Backend(backend) = &error
                    && backend.is_throttle()
                {
                    // Throttles tighten the queue's limit even when a retry hides them: the
                    // pool reads the count from the result.
                    budget.throttles.fetch_add(1, Ordering::Relaxed);
                }
                error.is_retryable()
            })
            .notify(|_, _| self.stats.record_retry(operation))
            .await
    }
}

/// The log target of the one line per applied (tenant, handler, event).
pub const APPLIED_LOG_TARGET: &str = "stripe_worker::applied";

/// One debug line per (tenant, handler, event) whose apply committed: an audit trail in
/// which a key that shows up twice was applied twice (the reliability tests count them).
fn log_applied(key: &DedupeKey, writes: usize) {
    tracing::debug!(
        target: "stripe_worker::applied",
        tenant = %key.tenant,
        handler = %key.handler,
        dedupe_id = %key.dedupe_id,
        writes,
        "applied"
    );
}

/// The message's outcome when a handler's effect outside the store failed.
fn effect_outcome(handler: &str, e: crate::handlers::EffectError) -> Outcome {
    if e.retryable {
        Outcome::RetryLater {
            kind: "effect",
            message: e.to_string(),
        }
    } else {
        Outcome::dead_letter("effect_error", e.to_string(), Some(handler))
    }
}

/// A reference to fetch the current version of a snapshot object.
fn reference_to(object: &Value) -> Option<ObjectRef> {
    let id = object.get("id")?.as_str()?.to_owned();
    let object_type = object.get("object")?.as_str()?.to_owned();
    let url = envelope::api_path(&object_type, &id);
    let customer = object
        .get("customer")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some(ObjectRef {
        id,
        object_type,
        url,
        customer,
    })
}
