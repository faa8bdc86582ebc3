//! `process_one`: one message in, one [`Outcome`] out. The pool, the replay command and
//! the tests all drive this step; it never touches the queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use serde_json::Value;
use tracing::Instrument;
use tracing::field::Empty;

use super::{Outcome, RetryPolicy, WorkerStats};
use crate::backend::{
    BackendError, Claim, DedupeKey, DedupeStore, FencingToken, ReceivedMessage, StateRecord,
    StateStore, WriteOutcome,
};
use crate::clock::Clock;
use crate::config::{Config, HydrateMode};
use crate::domain::Domain;
use crate::event::{EventObject, NormalisedEvent, ObjectRef, decode_message, envelope};
use crate::handlers::Handler;
use crate::hydrate::{HydrateError, Hydrator};
use crate::telemetry::metrics::{self, time_backend};
use crate::telemetry::trace::{MESSAGING_SYSTEM_SQS, continue_trace};
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
/// export off it is disabled at its call site and costs nothing.
pub fn process_span(queue: &str, message: &ReceivedMessage) -> tracing::Span {
    tracing::debug_span!(
        "process",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = MESSAGING_SYSTEM_SQS,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = queue,
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

/// The settings `process_one` needs.
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    /// Dedupe lease per claim.
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
    /// A processor over these handlers and stores.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
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
        }
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
    /// event, each at most once per event (dedupe), writing state newest-wins.
    pub async fn process_one(&self, domain: Domain, message: &ReceivedMessage) -> Outcome {
        let span = process_span(domain.as_str(), message);
        self.process_in(domain, message, &span).await
    }

    /// [`Self::process_one`] inside `span` (from [`process_span`], not yet entered): the
    /// span continues the trace the event carries and gets the event's attributes and the
    /// outcome. The pool keeps the span for the acknowledgement that follows.
    pub async fn process_in(
        &self,
        domain: Domain,
        message: &ReceivedMessage,
        span: &tracing::Span,
    ) -> Outcome {
        span.record("stripe_worker.domain", domain.as_str());
        let outcome = match decode_message(message.body.as_bytes()) {
            Ok(event) => {
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
                let lag_ms = self.now_ms() - event.created_ms;
                metrics::get().event_lag(
                    domain.as_str(),
                    event.source.label(),
                    lag_ms as f64 / 1000.0,
                );
                self.process_event(domain, &event)
                    .instrument(span.clone())
                    .await
            }
            Err(e) => Outcome::dead_letter(e.reason(), e.to_string(), None),
        };
        span.record("stripe_worker.outcome", outcome.label());
        match &outcome {
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
        outcome
    }

    /// [`Self::process_one`] for an event already decoded (replay and tests).
    pub async fn process_event(&self, domain: Domain, event: &NormalisedEvent) -> Outcome {
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
        let started = tokio::time::Instant::now();
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
                .apply_once(handler.as_ref(), &key, event, &mut object, started)
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

    /// Claim, apply and complete one handler's share of an event. `Ok(None)` is a duplicate;
    /// `Err` carries the message's outcome when this handler cannot finish.
    async fn apply_once(
        &self,
        handler: &dyn Handler,
        key: &DedupeKey,
        event: &NormalisedEvent,
        object: &mut Option<(Value, i64)>,
        started: tokio::time::Instant,
    ) -> Result<Option<usize>, Outcome> {
        let lease = self.settings.lease;
        let claim = self
            .retrying(started, "dedupe_claim", || {
                time_backend("dedupe_claim", self.dedupe.claim(key, self.now_ms(), lease))
            })
            .instrument(tracing::debug_span!(
                "dedupe claim",
                otel.kind = "client",
                stripe_worker.handler = handler.name()
            ))
            .await
            .map_err(|e| StepError::from(e).into_outcome(handler.name()))?;
        let token = match claim {
            Claim::Claimed(token) => token,
            Claim::AlreadyDone if !(self.settings.reprocess || wants_reprocess(event)) => {
                return Ok(None);
            }
            // Reprocessing: re-apply under a token of our own, and leave the entry done.
            Claim::AlreadyDone => FencingToken::new(),
            Claim::InProgressElsewhere { until_ms } => {
                return Err(Outcome::InProgressElsewhere { until_ms });
            }
        };
        // The claim protects this application only while its lease runs: past it another
        // worker may claim the same key and apply concurrently. So the application gets
        // the lease minus a margin (for the claim's own round trip and clock skew); if it
        // runs over, it is abandoned and retried later. State writes are newest-wins, so
        // a write that lands after the abandon changes nothing the retry would not.
        let deadline = lease_deadline(lease);
        let applied = tokio::time::timeout(
            deadline,
            self.apply_claimed(handler, key, event, object, started),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Outcome::RetryLater {
                kind: "lease_deadline",
                message: format!(
                    "handler {} did not finish within {} ms of its {} s dedupe lease",
                    handler.name(),
                    deadline.as_millis(),
                    lease.as_secs()
                ),
            })
        });
        match applied {
            Ok(writes) => {
                let retention = self.settings.retention;
                let completed = self
                    .retrying(started, "dedupe_complete", || {
                        time_backend(
                            "dedupe_complete",
                            self.dedupe.complete(key, &token, self.now_ms(), retention),
                        )
                    })
                    .await;
                match completed {
                    Ok(()) => {
                        log_applied(key, writes, false);
                        Ok(Some(writes))
                    }
                    // Reprocessing holds no claim, and a lost lease means another worker
                    // took over: either way the state writes (idempotent) are done.
                    Err(BackendError::LeaseLost { .. }) => {
                        log_applied(key, writes, true);
                        Ok(Some(writes))
                    }
                    Err(e) => Err(StepError::from(e).into_outcome(handler.name())),
                }
            }
            Err(outcome) => {
                // Let the next attempt claim at once instead of waiting out the lease. If the
                // release fails the lease simply expires: nothing is lost.
                if let Err(e) = self
                    .retrying(started, "dedupe_release", || {
                        self.dedupe.release(key, &token)
                    })
                    .await
                {
                    tracing::warn!(error = %e, "could not release dedupe claim");
                }
                Err(outcome)
            }
        }
    }

    /// Get the object (hydrating if needed), run the handler, write its changes.
    async fn apply_claimed(
        &self,
        handler: &dyn Handler,
        key: &DedupeKey,
        event: &NormalisedEvent,
        object: &mut Option<(Value, i64)>,
        started: tokio::time::Instant,
    ) -> Result<usize, Outcome> {
        if object.is_none() {
            *object = Some(
                self.object_of(&key.tenant, event, started)
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
        let write_span = tracing::debug_span!(
            "state write",
            otel.kind = "client",
            stripe_worker.handler = handler.name(),
            stripe_worker.changes = changes.len() as i64,
            stripe_worker.written = Empty,
        );
        let writes = self
            .write_changes(changes, key, event, *as_of_ms, started, handler)
            .instrument(write_span.clone())
            .await?;
        write_span.record("stripe_worker.written", writes as i64);
        Ok(writes)
    }

    /// Write a handler's changes newest-wins; the number actually written.
    async fn write_changes(
        &self,
        changes: Vec<crate::handlers::StateChange>,
        key: &DedupeKey,
        event: &NormalisedEvent,
        as_of_ms: i64,
        started: tokio::time::Instant,
        handler: &dyn Handler,
    ) -> Result<usize, Outcome> {
        let mut writes = 0;
        for change in changes {
            let record = StateRecord {
                tenant: key.tenant.clone(),
                kind: change.kind,
                id: change.id,
                customer: change.customer,
                as_of_ms,
                tiebreak: event.dedupe_id.clone(),
                doc: change.doc,
            };
            // Same-second ties with another event's record are resolved by fetching the
            // object (crate::reconcile::ties).
            let tie = crate::reconcile::ties::Tie {
                hydrator: self.hydrator.as_deref(),
                handler,
                event_type: &event.event_type,
                connect_account: event.connect_account.as_deref(),
                clock: &self.clock,
            };
            let written = self
                .retrying(started, "state_write", || {
                    time_backend(
                        "state_write",
                        crate::reconcile::ties::put_resolving_ties::<_, StepError>(
                            self.state.as_ref(),
                            &record,
                            &tie,
                        ),
                    )
                })
                .await
                .map_err(|e| e.into_outcome(handler.name()))?;
            if written == WriteOutcome::Written {
                writes += 1;
            }
        }
        Ok(writes)
    }

    /// The object to apply and its as-of: the snapshot and the event's `created`, or the
    /// fetched current object and the fetch time.
    async fn object_of(
        &self,
        tenant: &str,
        event: &NormalisedEvent,
        started: tokio::time::Instant,
    ) -> Result<(Value, i64), StepError> {
        let reference = match (&event.object, self.settings.hydrate) {
            (EventObject::Full { object }, HydrateMode::Thin) => {
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
            .retrying(started, "hydrate", || {
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
        started: tokio::time::Instant,
        operation: &'static str,
        step: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<StepError> + Clone,
    {
        let remaining = self.settings.retry.budget.saturating_sub(started.elapsed());
        step.retry(self.settings.retry.backoff(remaining))
            .sleep(tokio::time::sleep)
            .when(|e: &E| {
                let error: StepError = e.clone().into();
                if let StepError::Backend(backend) = &error {
                    // Throttles tighten this message's queue limit even when a retry hides them.
                    super::adaptive::observe(backend);
                }
                error.is_retryable()
            })
            .notify(|_, _| self.stats.record_retry(operation))
            .await
    }
}

/// How long an application may run under a dedupe claim of `lease`: the lease less a
/// tenth (at least 100 ms, at most 5 s) for the claim's round trip and clock skew.
fn lease_deadline(lease: Duration) -> Duration {
    let margin = (lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
    lease.saturating_sub(margin).max(lease / 2)
}

/// The log target of the one line per applied (tenant, handler, event).
pub const APPLIED_LOG_TARGET: &str = "stripe_worker::applied";

/// One debug line per (tenant, handler, event) whose application completed: an audit trail
/// in which a key that shows up twice was applied twice (the reliability tests count them).
/// `lease_lost` marks an apply whose claim another worker had taken over meanwhile.
fn log_applied(key: &DedupeKey, writes: usize, lease_lost: bool) {
    tracing::debug!(
        target: "stripe_worker::applied",
        tenant = %key.tenant,
        handler = %key.handler,
        dedupe_id = %key.dedupe_id,
        writes,
        lease_lost,
        "applied"
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_deadline_leaves_a_tenth_between_100_ms_and_5_s() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(lease_deadline(s(30)), s(27));
        assert_eq!(lease_deadline(s(60)), s(55));
        assert_eq!(lease_deadline(s(300)), s(295));
        assert_eq!(lease_deadline(s(1)), ms(900));
        // Never less than half the lease, however short.
        assert_eq!(lease_deadline(ms(150)), ms(75));
    }
}
