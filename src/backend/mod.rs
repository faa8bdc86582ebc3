//! The backend seams: narrow traits for what the pipeline needs from a queue, a dedupe
//! store, a state store and an event bus, and the [`Backend`] bundle the worker runs on.
//!
//! Production implementations sit behind them: [`sqlite`] (the embedded default, with
//! [`local_bus`] routing into its queues) and [`aws`] (SQS, DynamoDB, EventBridge). The
//! test and simulation doubles are apart in [`doubles`] (memory, faults, latency). The code
//! above these traits is the same for all; `tests/it/conformance/` checks each against one
//! suite. [`publish_all`] is the one publish loop; the SQS semantics the local queues share
//! live in `queue_rules`.

pub mod aws;
pub mod dead_letter;
pub mod doubles;
pub mod local_bus;
mod publish;
mod queue_rules;
pub mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::Domain;

pub use dead_letter::{DeadLetterOps, DlqMessage, RedriveFilter};
pub use publish::{DEFAULT_BACKOFF, MAX_PUBLISH_BATCH, publish_all, publish_entries};
pub use queue_rules::MAX_RECEIVE_COUNT_EXCEEDED;

/// What went wrong in a backend call, split by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The service asked us to slow down (SQS/DynamoDB throttling, SQLite busy).
    #[error("{operation}: throttled: {message}")]
    Throttled {
        operation: &'static str,
        message: String,
    },
    /// A failure that may succeed if tried again (timeouts, 5xx, connection errors).
    #[error("{operation}: transient failure: {message}")]
    Transient {
        operation: &'static str,
        message: String,
    },
    /// A failure that will not succeed if tried again (bad configuration, missing queue,
    /// access denied, invalid request).
    #[error("{operation}: {message}")]
    Permanent {
        operation: &'static str,
        message: String,
    },
    /// A dedupe lease was taken over by another worker: our fencing token no longer holds.
    #[error("{operation}: lease lost: the dedupe claim is held by another worker")]
    LeaseLost { operation: &'static str },
}

impl BackendError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BackendError::Throttled { .. } | BackendError::Transient { .. }
        )
    }

    /// Whether the service asked us to slow down.
    pub fn is_throttle(&self) -> bool {
        matches!(self, BackendError::Throttled { .. })
    }

    /// The operation that failed, a bounded label.
    pub fn operation(&self) -> &'static str {
        match self {
            BackendError::Throttled { operation, .. }
            | BackendError::Transient { operation, .. }
            | BackendError::Permanent { operation, .. }
            | BackendError::LeaseLost { operation } => operation,
        }
    }
}

/// The result type of every backend call.
pub type BackendResult<T> = Result<T, BackendError>;

/// An opaque handle for acting on one received message (an SQS receipt handle).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Receipt(pub String);

/// A message taken from a queue, invisible to other receivers until its visibility
/// timeout passes, it is deleted, or its visibility is changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// The queue's id for the message (stable across receives).
    pub message_id: String,
    /// The handle for delete and visibility changes (new on every receive).
    pub receipt: Receipt,
    /// The message body: an EventBridge envelope, or anything a producer sent.
    pub body: String,
    /// How many times the message has been received, this receive included (from 1).
    pub receive_count: u32,
    /// When the message was first sent to the queue, ms since the epoch.
    pub sent_at_ms: i64,
    /// String message attributes (e.g. the dead-letter reason attributes).
    pub attributes: BTreeMap<String, String>,
}

/// Why a message was dead-lettered, sent along as message attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterReason {
    /// A short, bounded code such as `decode_error`, `unknown_tenant`, `retries_exhausted`.
    pub kind: String,
    /// A human-readable explanation (truncated by backends to fit attribute limits).
    pub message: String,
    /// The handler that gave up, when one did.
    pub handler: Option<String>,
}

/// The message attribute names a dead-lettered message carries.
pub mod dlq_attributes {
    /// [`super::DeadLetterReason::kind`].
    pub const ERROR_KIND: &str = "stripe_worker.error_kind";
    /// [`super::DeadLetterReason::message`].
    pub const ERROR_MESSAGE: &str = "stripe_worker.error_message";
    /// [`super::DeadLetterReason::handler`].
    pub const HANDLER: &str = "stripe_worker.handler";
    /// The name of the queue the message was dead-lettered from.
    pub const SOURCE_QUEUE: &str = "stripe_worker.source_queue";
    /// When the message was first sent to the source queue, ms since the epoch.
    pub const FIRST_SEEN_MS: &str = "stripe_worker.first_seen_ms";
    /// How many times the source queue had delivered it.
    pub const RECEIVE_COUNT: &str = "stripe_worker.receive_count";
    /// When it was dead-lettered, ms since the epoch.
    pub const DEAD_LETTERED_MS: &str = "stripe_worker.dead_lettered_ms";
}

/// Which entries of a batch call failed; the others succeeded.
#[derive(Debug, Default, Clone)]
pub struct BatchFailures {
    /// The failed entries with their errors.
    pub failed: Vec<(Receipt, BackendError)>,
}

/// Approximate counts for one queue (SQS's `ApproximateNumberOfMessages*`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Messages that a receive could return now.
    pub visible: u64,
    /// Messages received and not yet deleted or made visible again.
    pub in_flight: u64,
    /// Messages sent with a delay that has not yet passed.
    pub delayed: u64,
    /// Age of the oldest message, in seconds, where the backend can tell.
    pub oldest_age_secs: Option<u64>,
}

/// How a queue is created: the attributes the SQS semantics depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// The queue name (the DLQ is named `<name>-dlq`).
    pub name: String,
    /// How long a received message stays invisible before it is delivered again.
    pub visibility_timeout: Duration,
    /// After this many receives a message that is received again goes to the DLQ instead
    /// (SQS `maxReceiveCount` of the redrive policy).
    pub max_receive_count: u32,
}

/// A queue with SQS semantics: at-least-once delivery, visibility timeouts, receive counts
/// and a dead-letter queue.
pub trait Queue: Send + Sync + 'static {
    /// The queue's name, for logs and DLQ attributes.
    fn name(&self) -> &str;

    /// Receive up to `max` (1..=10) messages, waiting up to `wait` for the first one.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = BackendResult<Vec<ReceivedMessage>>> + Send;

    /// Delete a batch of up to 10 received messages (acknowledge them).
    fn delete_batch(
        &self,
        receipts: &[Receipt],
    ) -> impl Future<Output = BackendResult<BatchFailures>> + Send;

    /// Change the visibility timeout of up to 10 received messages: extend it while work
    /// goes on (heartbeat), set it for a backoff, or 0 to release a message now.
    fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> impl Future<Output = BackendResult<BatchFailures>> + Send;

    /// Send a message to this queue's dead-letter queue with the reason as attributes,
    /// then delete it from this queue. Send comes first: a crash between the two leaves a
    /// duplicate, never a loss.
    fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &DeadLetterReason,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Send a raw message body to this queue, visible after `delay`. Returns the message id.
    fn send(
        &self,
        body: &str,
        delay: Duration,
    ) -> impl Future<Output = BackendResult<String>> + Send;

    /// Approximate counts for this queue and for its dead-letter queue.
    fn stats(&self) -> impl Future<Output = BackendResult<(QueueStats, QueueStats)>> + Send;
}

/// The dedupe key: one per tenant, handler and Stripe event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DedupeKey {
    /// The tenant the event belongs to.
    pub tenant: String,
    /// The handler that applies it (each handler applies an event once).
    pub handler: String,
    /// [`crate::event::NormalisedEvent::dedupe_id`].
    pub dedupe_id: String,
}

impl DedupeKey {
    /// The single-string form stored by the backends: `tenant#handler#dedupe_id`.
    pub fn storage_key(&self) -> String {
        format!("{}#{}#{}", self.tenant, self.handler, self.dedupe_id)
    }
}

/// Proof of holding a dedupe claim: a fenced apply, renew and release succeed only with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FencingToken(pub String);

impl FencingToken {
    /// A fresh random token.
    pub fn new() -> Self {
        FencingToken(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl Default for FencingToken {
    fn default() -> Self {
        Self::new()
    }
}

/// The answer to a dedupe claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// We hold the claim until the lease ends; apply with [`Marker::Fenced`] and the token.
    Claimed(FencingToken),
    /// The event was already applied by this handler: acknowledge it as a duplicate.
    AlreadyDone,
    /// Another worker holds an unexpired lease until this time (ms since the epoch).
    InProgressElsewhere { until_ms: i64 },
}

/// Leases on dedupe keys, for the handlers whose work reaches outside the store (see
/// [`crate::handlers::Handler::acts_outside_store`]): the claim keeps a second worker
/// from running the outside effect while the first still runs it. Handlers that only
/// write state need no lease: [`StateStore::apply`] alone makes them exactly-once.
///
/// The claims live where [`StateStore::apply`] keeps its applied-markers (the same table
/// or map), so a claim sees events already applied and a fenced apply sees the claim.
pub trait DedupeStore: Send + Sync + 'static {
    /// Claim `key`. Succeeds if absent, if in progress with a lease that ended before
    /// `now_ms`, or if applied and past retention. Expiry is compared here, in code,
    /// never left to a TTL sweeper.
    fn claim(
        &self,
        key: &DedupeKey,
        now_ms: i64,
        lease: Duration,
    ) -> impl Future<Output = BackendResult<Claim>> + Send;

    /// Extend a held claim to `now_ms + lease` (the heartbeat of a running handler).
    /// Fails with [`BackendError::LeaseLost`] unless `token` still holds the claim.
    fn renew(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        lease: Duration,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Give up a claim without applying, so another attempt can claim at once. A release
    /// with a stale token, or of a key already applied, does nothing.
    fn release(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
    ) -> impl Future<Output = BackendResult<()>> + Send;
}

/// What reconciling with the Stripe API (`import`, `sweep`) needs from the dedupe store
/// besides claims: a read-only "was this event applied" and small named checkpoints per
/// tenant (an import's cursor per kind, the sweep's watermark). Implemented by every
/// dedupe store, on the same table, so no backend needs another resource.
pub trait ReconcileStore: Send + Sync + 'static {
    /// Whether `key` was applied and is still remembered at `now_ms` (completed, within
    /// its retention). Never claims: a sweep asking changes nothing a worker would notice.
    fn was_applied(
        &self,
        key: &DedupeKey,
        now_ms: i64,
    ) -> impl Future<Output = BackendResult<bool>> + Send;

    /// The value of `tenant`'s checkpoint `name`, if set.
    fn checkpoint(
        &self,
        tenant: &str,
        name: &str,
    ) -> impl Future<Output = BackendResult<Option<String>>> + Send;

    /// Set (`Some`) or clear (`None`) `tenant`'s checkpoint `name`. Checkpoints never
    /// expire.
    fn set_checkpoint(
        &self,
        tenant: &str,
        name: &str,
        value: Option<&str>,
    ) -> impl Future<Output = BackendResult<()>> + Send;
}

/// What an apply requires of the event's applied-marker (the dedupe record of its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// The usual case: the marker must be absent (or past retention, or an abandoned
    /// claim whose lease ended). A marker already there makes the apply a
    /// [`ApplyOutcome::Duplicate`] that writes nothing.
    IfAbsent,
    /// Reprocessing: write the marker whatever it holds, and the records newer-wins.
    Overwrite,
    /// A lease handler's apply: only while `token` still holds the claim (fencing). A
    /// lost claim fails with [`BackendError::LeaseLost`] and writes nothing.
    Fenced(&'a FencingToken),
}

/// One handler's share of one event: its applied-marker and its state records, to be
/// committed together or not at all.
#[derive(Debug, Clone, Copy)]
pub struct EventWrite<'a> {
    /// The dedupe key the marker is stored under.
    pub key: &'a DedupeKey,
    /// What the marker must be for the write to go ahead.
    pub marker: Marker<'a>,
    /// Now, ms since the epoch: expiry of older markers and claims is compared with it.
    pub now_ms: i64,
    /// How long the marker is kept from now.
    pub retention: Duration,
    /// The records, each written only if it [supersedes](StateRecord::supersedes) the
    /// stored one. At most one per (tenant, kind, id).
    pub records: &'a [StateRecord],
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The marker is written, and with it every record that was not stale: one entry
    /// per record of the [`EventWrite`], in order.
    Applied(Vec<WriteOutcome>),
    /// The marker was already there: the event is applied, nothing was written.
    Duplicate,
    /// A lease handler's claim on the key is held until this time (ms since the epoch);
    /// nothing was written.
    HeldElsewhere { until_ms: i64 },
}

/// The failed condition of a marker that is not absent, as the backends report it:
/// applied already, or claimed by a lease that has not ended.
pub(crate) fn blocked_by(done: bool, until_ms: i64) -> ApplyOutcome {
    if done {
        ApplyOutcome::Duplicate
    } else {
        ApplyOutcome::HeldElsewhere { until_ms }
    }
}

/// One piece of billing state: the latest known version of one Stripe object for a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The tenant that owns the record; part of every key.
    pub tenant: String,
    /// What the record describes: `subscription`, `invoice`, `payment_intent`, ...
    pub kind: String,
    /// The Stripe object id.
    pub id: String,
    /// The customer the object belongs to, for per-customer queries.
    pub customer: Option<String>,
    /// The as-of time of the version (event `created` for snapshots, fetch time for
    /// hydrated objects), ms since the epoch.
    pub as_of_ms: i64,
    /// Breaks ties between writes with the same as-of: the larger string wins. The worker
    /// uses the event's dedupe id, so the rule is deterministic across workers and replays.
    pub tiebreak: String,
    /// The record's fields, as the handler shaped them.
    pub doc: Value,
}

impl StateRecord {
    /// Whether this version should replace `existing`: a strictly later as-of, or the
    /// same as-of and a strictly larger tiebreak. Equal versions do not replace each
    /// other, which makes re-applying an event a no-op.
    pub fn supersedes(&self, existing: &StateRecord) -> bool {
        (self.as_of_ms, self.tiebreak.as_str()) > (existing.as_of_ms, existing.tiebreak.as_str())
    }
}

/// What a conditional state write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The record was absent or older, and now holds the new version.
    Written,
    /// A version at least as new was already stored; nothing changed.
    Stale,
}

/// Billing state per tenant, written only by conditional "newer wins" upserts.
pub trait StateStore: Send + Sync + 'static {
    /// Apply one handler's share of an event: the applied-marker (as `write.marker`
    /// requires) and each record's "newer wins" upsert, committed together (one SQLite
    /// transaction, one DynamoDB `TransactWriteItems`). A stale record is skipped, not an
    /// error. A crash at any point leaves the event either applied or not applied at all,
    /// so no lease is needed to apply it exactly once.
    fn apply(
        &self,
        write: &EventWrite<'_>,
    ) -> impl Future<Output = BackendResult<ApplyOutcome>> + Send;

    /// Store `record` if no record with its key exists or it
    /// [supersedes](StateRecord::supersedes) the stored one; one atomic step, no
    /// read-modify-write race.
    fn put_if_newer(
        &self,
        record: &StateRecord,
    ) -> impl Future<Output = BackendResult<WriteOutcome>> + Send;

    /// One record by key.
    fn get(
        &self,
        tenant: &str,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = BackendResult<Option<StateRecord>>> + Send;

    /// Every record of a tenant's customer (the customer record itself included), in
    /// (kind, id) order.
    fn by_customer(
        &self,
        tenant: &str,
        customer: &str,
    ) -> impl Future<Output = BackendResult<Vec<StateRecord>>> + Send;

    /// Every record, or every record of one tenant, in (tenant, kind, id) order.
    fn export(
        &self,
        tenant: Option<&str>,
    ) -> impl Future<Output = BackendResult<Vec<StateRecord>>> + Send;

    /// One page of a tenant's records of `kind` whose [status](record_status) is
    /// `status`: those with an id greater than `after` (all when `None`), in id order, at
    /// most `limit`. A caller that asks for one more than it shows knows whether another
    /// page follows. The read API's subscriptions-by-status list (SQLite: an index on the
    /// status; DynamoDB: the `by_kind_status` index, eventually consistent like
    /// `by_customer`).
    ///
    /// The default reads the tenant's whole export and is the reference the backends'
    /// own queries are checked against; only wrappers and test doubles keep it.
    fn by_kind_status(
        &self,
        tenant: &str,
        kind: &str,
        status: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = BackendResult<Vec<StateRecord>>> + Send {
        async move {
            let records = self.export(Some(tenant)).await?;
            Ok(records
                .into_iter()
                .filter(|r| {
                    r.kind == kind
                        && record_status(&r.doc) == Some(status)
                        && after.is_none_or(|after| r.id.as_str() > after)
                })
                .take(limit)
                .collect())
        }
    }
}

/// The status a record is listed under by [`StateStore::by_kind_status`]: its document's
/// `status` string (subscriptions, invoices, payment intents...), `None` without one.
pub fn record_status(doc: &Value) -> Option<&str> {
    doc.get("status").and_then(Value::as_str)
}

/// One event to put on a bus (defined with the envelopes it is made from).
pub use crate::event::BusEntry;

/// Which entries of a publish failed; the others were accepted.
#[derive(Debug, Default, Clone)]
pub struct PublishFailures {
    /// Index into the published slice, and why it failed.
    pub failed: Vec<(usize, BackendError)>,
}

/// An event bus whose rules route events into the domain queues.
pub trait Bus: Send + Sync + 'static {
    /// Publish a batch of entries. Returns the entries that were not accepted; the caller
    /// re-sends only those.
    fn publish(
        &self,
        entries: &[BusEntry],
    ) -> impl Future<Output = BackendResult<PublishFailures>> + Send;
}

/// Stores every envelope a bus accepted, for replay (EventBridge archives).
pub trait Archive: Send + Sync + 'static {
    /// Keep one delivered envelope (the JSON the rules matched), stamped with its time.
    fn append(
        &self,
        envelope: &str,
        time_ms: i64,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// The envelopes whose time is in `from_ms..to_ms`, oldest first.
    fn range(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = BackendResult<Vec<String>>> + Send;
}

/// A value per domain, indexed by [`Domain`].
#[derive(Debug, Clone)]
pub struct PerDomain<T> {
    /// The subscription domain's value.
    pub subscription: T,
    /// The payment domain's value.
    pub payment: T,
    /// The customer domain's value.
    pub customer: T,
}

impl<T> PerDomain<T> {
    /// Build one value per domain.
    pub fn from_fn(mut f: impl FnMut(Domain) -> T) -> Self {
        PerDomain {
            subscription: f(Domain::Subscription),
            payment: f(Domain::Payment),
            customer: f(Domain::Customer),
        }
    }

    /// The value for `domain`.
    pub fn get(&self, domain: Domain) -> &T {
        match domain {
            Domain::Subscription => &self.subscription,
            Domain::Payment => &self.payment,
            Domain::Customer => &self.customer,
        }
    }

    /// Fallible [`PerDomain::from_fn`].
    pub fn try_from_fn<E>(mut f: impl FnMut(Domain) -> Result<T, E>) -> Result<Self, E> {
        Ok(PerDomain {
            subscription: f(Domain::Subscription)?,
            payment: f(Domain::Payment)?,
            customer: f(Domain::Customer)?,
        })
    }
}

/// Everything the worker runs on, for one backend kind. Cheap to clone.
pub struct Backend<Q, D, S, B> {
    /// One queue per domain.
    pub queues: Arc<PerDomain<Q>>,
    /// The dedupe store.
    pub dedupe: Arc<D>,
    /// The billing state store.
    pub state: Arc<S>,
    /// The event bus (publishing side).
    pub bus: Arc<B>,
}

impl<Q, D, S, B> Clone for Backend<Q, D, S, B> {
    fn clone(&self) -> Self {
        Backend {
            queues: Arc::clone(&self.queues),
            dedupe: Arc::clone(&self.dedupe),
            state: Arc::clone(&self.state),
            bus: Arc::clone(&self.bus),
        }
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Receipt({})", self.0)
    }
}

// Shared handles are backends too: a wrapper (such as fault injection) can hold an `Arc`
// of a backend the rest of the process also uses.

impl<T: DedupeStore> DedupeStore for Arc<T> {
    async fn claim(&self, key: &DedupeKey, now_ms: i64, lease: Duration) -> BackendResult<Claim> {
        (**self).claim(key, now_ms, lease).await
    }

    async fn renew(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        lease: Duration,
    ) -> BackendResult<()> {
        (**self).renew(key, token, now_ms, lease).await
    }

    async fn release(&self, key: &DedupeKey, token: &FencingToken) -> BackendResult<()> {
        (**self).release(key, token).await
    }
}

impl<T: StateStore> StateStore for Arc<T> {
    async fn apply(&self, write: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        (**self).apply(write).await
    }

    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        (**self).put_if_newer(record).await
    }

    async fn get(&self, tenant: &str, kind: &str, id: &str) -> BackendResult<Option<StateRecord>> {
        (**self).get(tenant, kind, id).await
    }

    async fn by_customer(&self, tenant: &str, customer: &str) -> BackendResult<Vec<StateRecord>> {
        (**self).by_customer(tenant, customer).await
    }

    async fn export(&self, tenant: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        (**self).export(tenant).await
    }

    async fn by_kind_status(
        &self,
        tenant: &str,
        kind: &str,
        status: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BackendResult<Vec<StateRecord>> {
        (**self)
            .by_kind_status(tenant, kind, status, after, limit)
            .await
    }
}

impl<T: ReconcileStore> ReconcileStore for Arc<T> {
    async fn was_applied(&self, key: &DedupeKey, now_ms: i64) -> BackendResult<bool> {
        (**self).was_applied(key, now_ms).await
    }

    async fn checkpoint(&self, tenant: &str, name: &str) -> BackendResult<Option<String>> {
        (**self).checkpoint(tenant, name).await
    }

    async fn set_checkpoint(
        &self,
        tenant: &str,
        name: &str,
        value: Option<&str>,
    ) -> BackendResult<()> {
        (**self).set_checkpoint(tenant, name, value).await
    }
}
