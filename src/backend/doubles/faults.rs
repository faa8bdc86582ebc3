//! Fault injection: a wrapper that makes a share of a backend's calls fail with transient
//! or throttling errors, seeded so a run can be repeated. Used by the demo, tests and
//! benchmarks to show that faults end retried, never lost.
//!
//! Most faults are injected before the call reaches the wrapped backend, so a failed call
//! had no effect (like a request that never arrived). With [`Faulty::with_lost_replies`] a
//! share of them are injected *after* the call: it took effect but the caller sees an error
//! (a timeout whose request did arrive, an acknowledgement lost on the way back).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backend::{
    ApplyOutcome, BackendError, BackendResult, BatchFailures, Bus, BusEntry, Claim,
    DeadLetterReason, DedupeKey, DedupeStore, EventWrite, FencingToken, PublishFailures, Queue,
    QueueStats, Receipt, ReceivedMessage, StateRecord, StateStore, WriteOutcome,
};

/// A backend whose calls fail at the given rate.
pub struct Faulty<T> {
    inner: T,
    /// Share of calls that fail, 0.0 to 1.0.
    rate: f64,
    /// Share of the failures that are throttling rather than transient errors.
    throttle_share: f64,
    /// Share of the failures that happen after the call took effect.
    lost_reply_share: f64,
    rng: Mutex<StdRng>,
    injected: AtomicU64,
    lost_replies: AtomicU64,
}

/// Where a call fails, if it does.
enum Fault {
    None,
    /// The call never reaches the backend.
    Before(BackendError),
    /// The call takes effect, then this error is returned instead of its result.
    After(BackendError),
}

impl<T> Faulty<T> {
    /// Wrap `inner`, failing `rate` of calls (a quarter of them as throttling).
    pub fn new(inner: T, rate: f64, seed: u64) -> Self {
        Faulty {
            inner,
            rate: rate.clamp(0.0, 1.0),
            throttle_share: 0.25,
            lost_reply_share: 0.0,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            injected: AtomicU64::new(0),
            lost_replies: AtomicU64::new(0),
        }
    }

    /// Make `share` (0.0 to 1.0) of the injected faults happen after the call took effect:
    /// the change is made, the caller sees a transient error (a timeout or lost reply).
    pub fn with_lost_replies(mut self, share: f64) -> Self {
        self.lost_reply_share = share.clamp(0.0, 1.0);
        self
    }

    /// How many faults were injected so far (lost replies included).
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// How many of the injected faults were lost replies (the call took effect).
    pub fn lost_replies(&self) -> u64 {
        self.lost_replies.load(Ordering::Relaxed)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Decide whether and where this call fails.
    fn fault(&self, operation: &'static str) -> Fault {
        let (fail, throttle, after) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let fail = rng.random_bool(self.rate);
            let throttle = rng.random_bool(self.throttle_share);
            // Drawn only when lost replies are on, so the fault sequence of a seed without
            // them stays what it always was.
            let after =
                fail && self.lost_reply_share > 0.0 && rng.random_bool(self.lost_reply_share);
            (fail, throttle, after)
        };
        if !fail {
            return Fault::None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        if after {
            // A lost reply looks like a timeout, never like throttling (which SQS and
            // DynamoDB answer before doing anything).
            self.lost_replies.fetch_add(1, Ordering::Relaxed);
            return Fault::After(BackendError::Transient {
                operation,
                message: "injected fault: the call took effect but its reply was lost".to_owned(),
            });
        }
        let message = "injected fault".to_owned();
        Fault::Before(if throttle {
            BackendError::Throttled { operation, message }
        } else {
            BackendError::Transient { operation, message }
        })
    }

    /// Run `call` on the wrapped backend unless a fault comes first; a lost reply runs it
    /// and returns the error all the same.
    async fn call<R>(
        &self,
        operation: &'static str,
        call: impl Future<Output = BackendResult<R>>,
    ) -> BackendResult<R> {
        match self.fault(operation) {
            Fault::None => call.await,
            Fault::Before(error) => Err(error),
            Fault::After(error) => {
                // Whatever the call did or answered, the caller only sees the error.
                let _ = call.await;
                Err(error)
            }
        }
    }
}

impl<T: DedupeStore> DedupeStore for Faulty<T> {
    async fn claim(&self, key: &DedupeKey, now_ms: i64, lease: Duration) -> BackendResult<Claim> {
        self.call("dedupe.claim", self.inner.claim(key, now_ms, lease))
            .await
    }

    async fn renew(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        lease: Duration,
    ) -> BackendResult<()> {
        self.call("dedupe.renew", self.inner.renew(key, token, now_ms, lease))
            .await
    }

    async fn release(&self, key: &DedupeKey, token: &FencingToken) -> BackendResult<()> {
        self.call("dedupe.release", self.inner.release(key, token))
            .await
    }
}

impl<T: StateStore> StateStore for Faulty<T> {
    async fn apply(&self, write: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        self.call("state.apply", self.inner.apply(write)).await
    }

    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        self.call("state.put", self.inner.put_if_newer(record))
            .await
    }

    async fn get(&self, tenant: &str, kind: &str, id: &str) -> BackendResult<Option<StateRecord>> {
        self.call("state.get", self.inner.get(tenant, kind, id))
            .await
    }

    async fn by_customer(&self, tenant: &str, customer: &str) -> BackendResult<Vec<StateRecord>> {
        self.call("state.query", self.inner.by_customer(tenant, customer))
            .await
    }

    async fn export(&self, tenant: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        // Reads for reports are not the subject of fault tests.
        self.inner.export(tenant).await
    }
}

impl<T: Queue> Queue for Faulty<T> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn receive(&self, max: usize, wait: Duration) -> BackendResult<Vec<ReceivedMessage>> {
        self.call("queue.receive", self.inner.receive(max, wait))
            .await
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> BackendResult<BatchFailures> {
        self.call("queue.delete", self.inner.delete_batch(receipts))
            .await
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> BackendResult<BatchFailures> {
        self.call(
            "queue.change_visibility",
            self.inner.change_visibility_batch(entries),
        )
        .await
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &DeadLetterReason,
    ) -> BackendResult<()> {
        self.call("queue.dead_letter", self.inner.dead_letter(message, reason))
            .await
    }

    async fn send(&self, body: &str, delay: Duration) -> BackendResult<String> {
        self.call("queue.send", self.inner.send(body, delay)).await
    }

    async fn stats(&self) -> BackendResult<(QueueStats, QueueStats)> {
        self.inner.stats().await
    }
}

impl<T: Bus> Bus for Faulty<T> {
    async fn publish(&self, entries: &[BusEntry]) -> BackendResult<PublishFailures> {
        self.call("bus.publish", self.inner.publish(entries)).await
    }
}
