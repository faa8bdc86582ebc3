//! The one publish loop: every caller that puts entries on a bus (the ingress, `publish`,
//! `sweep`, `backfill`, the demo) goes through [`publish_all`] ([`publish_entries`] is it
//! with the command line's backoff).
//!
//! A bus call can fail two ways. A call that fails as a whole was already retried by the
//! bus's client (the AWS SDK for EventBridge; see [`crate::retry`]), so it is reported at
//! once. A call that succeeds but rejects some entries (`PutEvents` answers per entry) is
//! re-sent here, those entries only, on the caller's [`Backoff`].

use std::time::Duration;

use super::{BackendError, Bus, BusEntry};
use crate::retry::{Backoff, ShouldRetry};
use crate::telemetry::metrics::time_backend;

/// The most entries one publish call carries (the `PutEvents` limit).
pub const MAX_PUBLISH_BATCH: usize = 10;

/// Publish calls in flight at once for a long stream.
const CONCURRENT_BATCHES: usize = 16;

/// How the command line's publishers (`publish`, `sweep`, `backfill`, the demo) re-send
/// entries the bus rejected.
pub const DEFAULT_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(20), Duration::from_secs(2), 5);

/// Publish `entries` in calls of at most [`MAX_PUBLISH_BATCH`] (several at a time), re-sending
/// the entries a call rejected with a retryable error on `backoff`. `on_resend` hears of
/// each re-send (the ingress counts them). Ends at the first error: a call that failed,
/// an entry rejected for good, or a retryable rejection still there when the backoff is
/// spent; batches already published stay published.
pub async fn publish_all<B: Bus + ?Sized>(
    bus: &B,
    entries: &[BusEntry],
    backoff: &Backoff,
    on_resend: impl Fn(usize),
) -> Result<(), BackendError> {
    for group in entries.chunks(MAX_PUBLISH_BATCH * CONCURRENT_BATCHES) {
        let batches = group
            .chunks(MAX_PUBLISH_BATCH)
            .map(|batch| publish_batch(bus, batch, backoff, &on_resend));
        futures::future::try_join_all(batches).await?;
    }
    Ok(())
}

/// [`publish_all`] with [`DEFAULT_BACKOFF`].
pub async fn publish_entries<B: Bus + ?Sized>(
    bus: &B,
    entries: &[BusEntry],
) -> Result<(), BackendError> {
    publish_all(bus, entries, &DEFAULT_BACKOFF, |_| {}).await
}

async fn publish_batch<B: Bus + ?Sized>(
    bus: &B,
    batch: &[BusEntry],
    backoff: &Backoff,
    on_resend: &impl Fn(usize),
) -> Result<(), BackendError> {
    let mut pending: Vec<BusEntry> = batch.to_vec();
    let mut delays = backoff.delays();
    loop {
        let failures = time_backend("bus_publish", bus.publish(&pending)).await?;
        if failures.failed.is_empty() {
            return Ok(());
        }
        if let Some((_, error)) = failures.failed.iter().find(|(_, e)| !e.should_retry()) {
            return Err(error.clone());
        }
        let last = failures.failed[0].1.clone();
        let mut rejected: Vec<usize> = failures.failed.iter().map(|(i, _)| *i).collect();
        rejected.sort_unstable();
        rejected.dedup();
        pending = pending
            .into_iter()
            .enumerate()
            .filter(|(i, _)| rejected.binary_search(i).is_ok())
            .map(|(_, entry)| entry)
            .collect();
        if pending.is_empty() {
            // Failures reported for entries that were not sent: what was accepted cannot
            // be told, so success is not claimed.
            return Err(BackendError::Permanent {
                operation: "publish",
                message: "the bus reported failures for entries it was not sent".into(),
            });
        }
        let Some(delay) = delays.next() else {
            return Err(last);
        };
        on_resend(pending.len());
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::backend::{BackendResult, PublishFailures};

    /// A bus that rejects the entries at the indexes it is told to, call by call, and
    /// records every call's size.
    struct Rejecting {
        rounds: Mutex<Vec<Vec<(usize, BackendError)>>>,
        calls: Mutex<Vec<usize>>,
    }

    impl Rejecting {
        fn new(rounds: Vec<Vec<(usize, BackendError)>>) -> Self {
            Rejecting {
                rounds: Mutex::new(rounds),
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    impl Bus for Rejecting {
        async fn publish(&self, entries: &[BusEntry]) -> BackendResult<PublishFailures> {
            self.calls.lock().unwrap().push(entries.len());
            let mut rounds = self.rounds.lock().unwrap();
            let failed = if rounds.is_empty() {
                Vec::new()
            } else {
                rounds.remove(0)
            };
            Ok(PublishFailures { failed })
        }
    }

    fn entries(n: usize) -> Vec<BusEntry> {
        (0..n)
            .map(|i| BusEntry {
                source: "test".into(),
                detail_type: "t".into(),
                detail: format!("{{\"i\":{i}}}"),
                resources: Vec::new(),
            })
            .collect()
    }

    fn transient() -> BackendError {
        BackendError::Throttled {
            operation: "publish",
            message: "rate exceeded".into(),
        }
    }

    fn quick(retries: usize) -> Backoff {
        Backoff::doubling(Duration::from_millis(1), Duration::from_millis(4), retries)
    }

    #[tokio::test(start_paused = true)]
    async fn only_rejected_entries_are_sent_again() {
        let bus = Rejecting::new(vec![vec![(1, transient()), (3, transient())]]);
        let resent = Mutex::new(Vec::new());
        publish_all(&bus, &entries(4), &quick(3), |n| {
            resent.lock().unwrap().push(n)
        })
        .await
        .expect("published");
        assert_eq!(*bus.calls.lock().unwrap(), [4, 2]);
        assert_eq!(*resent.lock().unwrap(), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_hold_at_most_ten_entries() {
        let bus = Rejecting::new(Vec::new());
        publish_all(&bus, &entries(25), &quick(0), |_| {})
            .await
            .expect("published");
        let mut calls = bus.calls.lock().unwrap().clone();
        calls.sort_unstable();
        assert_eq!(calls, [5, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_rejection_ends_it_at_once_and_retries_are_bounded() {
        let permanent = BackendError::Permanent {
            operation: "publish",
            message: "too large".into(),
        };
        let bus = Rejecting::new(vec![vec![(0, transient()), (1, permanent)]]);
        let err = publish_all(&bus, &entries(2), &quick(3), |_| {})
            .await
            .expect_err("rejected for good");
        assert!(!err.is_retryable(), "{err}");
        assert_eq!(bus.calls.lock().unwrap().len(), 1);

        let always = (0..10).map(|_| vec![(0, transient())]).collect();
        let bus = Rejecting::new(always);
        let err = publish_all(&bus, &entries(1), &quick(2), |_| {})
            .await
            .expect_err("still rejected");
        assert!(err.is_throttle(), "{err}");
        assert_eq!(
            bus.calls.lock().unwrap().len(),
            3,
            "one call and two re-sends"
        );
    }
}
