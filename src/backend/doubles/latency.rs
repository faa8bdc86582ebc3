//! Latency injection for load simulation: [`Latent`] delays every call of a backend by a
//! fixed latency (with optional jitter), as a remote service would, and counts the calls
//! per operation so a benchmark can tell how many round trips each message cost.
//! [`Capacity`] plays a downstream with bounded concurrency: calls beyond its capacity
//! fail at once with [`BackendError::Throttled`], as DynamoDB does past its provisioned
//! throughput. `stripe-worker bench` stacks them over the memory or SQLite backend.
//!
//! The delay comes before the call reaches the wrapped backend, and a failure of the
//! wrapped backend (for example an injected fault) still pays it: a remote error costs a
//! round trip too.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backend::{
    ApplyOutcome, BackendError, BackendResult, BatchFailures, Claim, DeadLetterReason, DedupeKey,
    DedupeStore, EventWrite, FencingToken, Queue, QueueStats, Receipt, ReceivedMessage,
    StateRecord, StateStore, WriteOutcome,
};

/// The operations whose calls [`Latent`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `Queue::receive`.
    Receive,
    /// `Queue::delete_batch`.
    Delete,
    /// `Queue::change_visibility_batch`.
    ChangeVisibility,
    /// `Queue::dead_letter`.
    DeadLetter,
    /// `Queue::send`.
    Send,
    /// `DedupeStore::claim`.
    Claim,
    /// `DedupeStore::renew`.
    Renew,
    /// `DedupeStore::release`.
    Release,
    /// `StateStore::put_if_newer`.
    Put,
    /// `StateStore::apply`.
    Apply,
    /// State reads (`get`, `by_customer`, `export`).
    Read,
}

impl Op {
    /// Every operation, in counting order.
    pub const ALL: [Op; 11] = [
        Op::Receive,
        Op::Delete,
        Op::ChangeVisibility,
        Op::DeadLetter,
        Op::Send,
        Op::Claim,
        Op::Renew,
        Op::Release,
        Op::Put,
        Op::Apply,
        Op::Read,
    ];

    /// The dedupe and state store operations: the round trips to the database.
    pub const STORE: [Op; 6] = [
        Op::Claim,
        Op::Renew,
        Op::Release,
        Op::Put,
        Op::Apply,
        Op::Read,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Calls made through a [`Latent`] wrapper, and the delay they really got, per operation.
#[derive(Debug, Default)]
pub struct CallCounts {
    calls: [AtomicU64; Op::ALL.len()],
    waited_ns: [AtomicU64; Op::ALL.len()],
}

impl CallCounts {
    /// Calls of `op` so far.
    pub fn get(&self, op: Op) -> u64 {
        self.calls[op.index()].load(Ordering::Relaxed)
    }

    /// Delay really injected into calls of `op` so far. Timers wake late (Tokio's have
    /// millisecond resolution and round up), so this is somewhat more than calls times
    /// the latency; a benchmark can tell the simulator's overshoot from the engine's.
    pub fn waited(&self, op: Op) -> Duration {
        Duration::from_nanos(self.waited_ns[op.index()].load(Ordering::Relaxed))
    }

    fn add(&self, op: Op) {
        self.calls[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn waited_for(&self, op: Op, wait: Duration) {
        let ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.waited_ns[op.index()].fetch_add(ns, Ordering::Relaxed);
    }
}

/// How long each call of a backend takes, on average, and how much it varies.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySpec {
    /// The mean latency of one call.
    pub mean: Duration,
    /// Spread as a share of the mean, 0.0 to 1.0: each call takes a uniformly drawn time
    /// in `mean * (1 - jitter) ..= mean * (1 + jitter)`, so the mean is unchanged.
    pub jitter: f64,
}

/// A backend whose every call takes [`LatencySpec`] longer, counted per operation.
pub struct Latent<T> {
    inner: T,
    spec: LatencySpec,
    rng: Mutex<StdRng>,
    counts: CallCounts,
}

impl<T> Latent<T> {
    /// Wrap `inner`; `seed` makes the jitter repeatable.
    pub fn new(inner: T, spec: LatencySpec, seed: u64) -> Self {
        Latent {
            inner,
            spec: LatencySpec {
                mean: spec.mean,
                jitter: spec.jitter.clamp(0.0, 1.0),
            },
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counts: CallCounts::default(),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The calls made so far.
    pub fn counts(&self) -> &CallCounts {
        &self.counts
    }

    /// Count the call and wait its latency. Without latency nothing is awaited, so a
    /// zero-latency wrapper costs an atomic increment and no task switch.
    async fn delay(&self, op: Op) {
        self.counts.add(op);
        if self.spec.mean.is_zero() {
            return;
        }
        let wait = if self.spec.jitter > 0.0 {
            let factor = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                rng.random_range(-self.spec.jitter..=self.spec.jitter)
            };
            self.spec.mean.mul_f64(1.0 + factor)
        } else {
            self.spec.mean
        };
        let started = tokio::time::Instant::now();
        tokio::time::sleep(wait).await;
        self.counts.waited_for(op, started.elapsed());
    }
}

impl<T: Queue> Queue for Latent<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn receive(&self, max: usize, wait: Duration) -> BackendResult<Vec<ReceivedMessage>> {
        // A long poll that finds messages answers after one round trip; one that waits
        // answers when a message arrives or the wait ends, plus the round trip.
        self.delay(Op::Receive).await;
        self.inner.receive(max, wait).await
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> BackendResult<BatchFailures> {
        self.delay(Op::Delete).await;
        self.inner.delete_batch(receipts).await
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> BackendResult<BatchFailures> {
        self.delay(Op::ChangeVisibility).await;
        self.inner.change_visibility_batch(entries).await
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &DeadLetterReason,
    ) -> BackendResult<()> {
        self.delay(Op::DeadLetter).await;
        self.inner.dead_letter(message, reason).await
    }

    async fn send(&self, body: &str, delay: Duration) -> BackendResult<String> {
        self.delay(Op::Send).await;
        self.inner.send(body, delay).await
    }

    async fn stats(&self) -> BackendResult<(QueueStats, QueueStats)> {
        self.inner.stats().await
    }
}

impl<T: DedupeStore> DedupeStore for Latent<T> {
    async fn claim(&self, key: &DedupeKey, now_ms: i64, lease: Duration) -> BackendResult<Claim> {
        self.delay(Op::Claim).await;
        self.inner.claim(key, now_ms, lease).await
    }

    async fn renew(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        lease: Duration,
    ) -> BackendResult<()> {
        self.delay(Op::Renew).await;
        self.inner.renew(key, token, now_ms, lease).await
    }

    async fn release(&self, key: &DedupeKey, token: &FencingToken) -> BackendResult<()> {
        self.delay(Op::Release).await;
        self.inner.release(key, token).await
    }
}

impl<T: StateStore> StateStore for Latent<T> {
    async fn apply(&self, write: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        self.delay(Op::Apply).await;
        self.inner.apply(write).await
    }

    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        self.delay(Op::Put).await;
        self.inner.put_if_newer(record).await
    }

    async fn get(&self, tenant: &str, kind: &str, id: &str) -> BackendResult<Option<StateRecord>> {
        self.delay(Op::Read).await;
        self.inner.get(tenant, kind, id).await
    }

    async fn by_customer(&self, tenant: &str, customer: &str) -> BackendResult<Vec<StateRecord>> {
        self.delay(Op::Read).await;
        self.inner.by_customer(tenant, customer).await
    }

    async fn export(&self, tenant: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        // Reports, not load: no latency.
        self.inner.export(tenant).await
    }
}

/// The shared concurrency budget of a downstream: how many calls it serves at once.
/// Several [`Capacity`] wrappers (the dedupe table and the state table of one database)
/// can share one gate.
#[derive(Debug)]
pub struct Gate {
    capacity: usize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    throttled: AtomicU64,
}

impl Gate {
    /// A downstream that serves up to `capacity` calls at once.
    pub fn new(capacity: usize) -> Arc<Gate> {
        Arc::new(Gate {
            capacity,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            throttled: AtomicU64::new(0),
        })
    }

    /// Calls refused so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// The most calls admitted at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Admit a call, or refuse it when `capacity` calls are already in progress. The
    /// returned guard holds the call's place until dropped.
    fn enter(&self, operation: &'static str) -> BackendResult<GateGuard<'_>> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = GateGuard { gate: self };
        if now > self.capacity {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::Throttled {
                operation,
                message: format!("more than {} calls in flight", self.capacity),
            });
        }
        self.peak.fetch_max(now, Ordering::Relaxed);
        Ok(guard)
    }
}

struct GateGuard<'a> {
    gate: &'a Gate,
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A backend that refuses calls beyond its [`Gate`]'s capacity with a throttling error.
/// Wrap it around a [`Latent`] so an admitted call holds its place for its latency.
pub struct Capacity<T> {
    inner: T,
    gate: Arc<Gate>,
}

impl<T> Capacity<T> {
    /// Wrap `inner` behind `gate`.
    pub fn new(inner: T, gate: Arc<Gate>) -> Self {
        Capacity { inner, gate }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: DedupeStore> DedupeStore for Capacity<T> {
    async fn claim(&self, key: &DedupeKey, now_ms: i64, lease: Duration) -> BackendResult<Claim> {
        let _place = self.gate.enter("dedupe.claim")?;
        self.inner.claim(key, now_ms, lease).await
    }

    async fn renew(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        lease: Duration,
    ) -> BackendResult<()> {
        let _place = self.gate.enter("dedupe.renew")?;
        self.inner.renew(key, token, now_ms, lease).await
    }

    async fn release(&self, key: &DedupeKey, token: &FencingToken) -> BackendResult<()> {
        let _place = self.gate.enter("dedupe.release")?;
        self.inner.release(key, token).await
    }
}

impl<T: StateStore> StateStore for Capacity<T> {
    async fn apply(&self, write: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        let _place = self.gate.enter("state.apply")?;
        self.inner.apply(write).await
    }

    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        let _place = self.gate.enter("state.put")?;
        self.inner.put_if_newer(record).await
    }

    async fn get(&self, tenant: &str, kind: &str, id: &str) -> BackendResult<Option<StateRecord>> {
        let _place = self.gate.enter("state.get")?;
        self.inner.get(tenant, kind, id).await
    }

    async fn by_customer(&self, tenant: &str, customer: &str) -> BackendResult<Vec<StateRecord>> {
        let _place = self.gate.enter("state.query")?;
        self.inner.by_customer(tenant, customer).await
    }

    async fn export(&self, tenant: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        self.inner.export(tenant).await
    }
}
