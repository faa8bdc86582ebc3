//! End-to-end accounting of a run: a queue wrapper that notes when each message's
//! receive began and when its delete (or dead-lettering) was confirmed.
//!
//! End to end here means what the worker adds to a message's life: the receive call that
//! brought it, processing, the wait for a delete batch and the delete call. Time spent
//! waiting in the queue before that is the backlog's doing, not the worker's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::{
    BackendResult, BatchFailures, DeadLetterReason, Queue, QueueStats, Receipt, ReceivedMessage,
};

/// Completions shared by the tracked queues of one run.
#[derive(Debug)]
pub struct Completions {
    start: Instant,
    completed: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Receipt to when the receive that returned it began.
    received_at: HashMap<String, Instant>,
    /// When each completion happened, since the start.
    done_at: Vec<Duration>,
    /// Receive start to confirmed delete, microseconds.
    end_to_end_us: hdrhistogram::Histogram<u64>,
    /// When the first queue had completed all of its messages, since the start.
    first_drained: Option<Duration>,
}

/// What a run's completions add up to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompletionSummary {
    /// Messages deleted or dead-lettered.
    pub completed: usize,
    /// Completions per second from the 5th percentile of completion times to the 95th,
    /// or to when the first queue ran out of messages if that came sooner: the steady
    /// state, without the ramp-up and the drain. (Once a queue is empty its pollers wait
    /// in long polls holding permits the other queues could use; that is a drain effect,
    /// not the steady state an SRE sizes for.)
    pub steady_rate: f64,
    /// Median end-to-end latency.
    pub p50: Duration,
    /// 99th percentile end-to-end latency.
    pub p99: Duration,
}

impl Completions {
    /// Start counting now.
    pub fn new() -> Arc<Self> {
        Arc::new(Completions {
            start: Instant::now(),
            completed: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                received_at: HashMap::new(),
                done_at: Vec::new(),
                end_to_end_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("static histogram bounds are valid"),
                first_drained: None,
            }),
        })
    }

    /// Messages completed so far.
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn received(&self, began: Instant, messages: &[ReceivedMessage]) {
        let mut inner = self.lock();
        for m in messages {
            inner.received_at.insert(m.receipt.0.clone(), began);
        }
    }

    fn drained(&self) {
        let at = self.start.elapsed();
        self.lock().first_drained.get_or_insert(at);
    }

    fn done<'a>(&self, receipts: impl Iterator<Item = &'a Receipt>) -> usize {
        let now = Instant::now();
        let since_start = now - self.start;
        let mut inner = self.lock();
        let mut n = 0;
        for receipt in receipts {
            if let Some(began) = inner.received_at.remove(&receipt.0) {
                let us = (now - began).as_micros().clamp(1, 3_600_000_000) as u64;
                // Clamped into the bounds, so recording cannot fail.
                let _ = inner.end_to_end_us.record(us);
                inner.done_at.push(since_start);
                n += 1;
            }
        }
        drop(inner);
        self.completed.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// The run's figures so far.
    pub fn summary(&self) -> CompletionSummary {
        let mut inner = self.lock();
        inner.done_at.sort_unstable();
        let n = inner.done_at.len();
        let steady_rate = if n >= 20 {
            let lo = n / 20;
            let mut hi = n - 1 - n / 20;
            if let Some(drained) = inner.first_drained {
                let before = inner.done_at.partition_point(|&t| t <= drained);
                if before > lo + n / 10 {
                    hi = hi.min(before - 1);
                }
            }
            let span = inner.done_at[hi] - inner.done_at[lo];
            (hi - lo) as f64 / span.as_secs_f64().max(1e-9)
        } else if n > 0 {
            n as f64 / inner.done_at[n - 1].as_secs_f64().max(1e-9)
        } else {
            0.0
        };
        let h = &inner.end_to_end_us;
        let at = |q| {
            if h.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_micros(h.value_at_quantile(q))
            }
        };
        CompletionSummary {
            completed: n,
            steady_rate,
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// A queue that reports receives and confirmed deletes to [`Completions`].
pub struct Tracked<Q> {
    inner: Q,
    completions: Arc<Completions>,
    /// Messages this queue was filled with (backlog excluded), and how many completed.
    expected: usize,
    completed: AtomicUsize,
}

impl<Q> Tracked<Q> {
    /// Wrap `inner`, which holds `expected` messages to process.
    pub fn new(inner: Q, completions: Arc<Completions>, expected: usize) -> Self {
        Tracked {
            inner,
            completions,
            expected,
            completed: AtomicUsize::new(0),
        }
    }

    fn count(&self, n: usize) {
        let before = self.completed.fetch_add(n, Ordering::Relaxed);
        if before < self.expected && before + n >= self.expected {
            self.completions.drained();
        }
    }

    /// The wrapped queue.
    pub fn inner(&self) -> &Q {
        &self.inner
    }
}

impl<Q: Queue> Queue for Tracked<Q> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn receive(&self, max: usize, wait: Duration) -> BackendResult<Vec<ReceivedMessage>> {
        let began = Instant::now();
        let messages = self.inner.receive(max, wait).await?;
        self.completions.received(began, &messages);
        Ok(messages)
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> BackendResult<BatchFailures> {
        let failures = self.inner.delete_batch(receipts).await?;
        let n = if failures.failed.is_empty() {
            self.completions.done(receipts.iter())
        } else {
            let failed: Vec<&Receipt> = failures.failed.iter().map(|(r, _)| r).collect();
            self.completions
                .done(receipts.iter().filter(|r| !failed.contains(r)))
        };
        self.count(n);
        Ok(failures)
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> BackendResult<BatchFailures> {
        self.inner.change_visibility_batch(entries).await
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &DeadLetterReason,
    ) -> BackendResult<()> {
        self.inner.dead_letter(message, reason).await?;
        let n = self.completions.done(std::iter::once(&message.receipt));
        self.count(n);
        Ok(())
    }

    async fn send(&self, body: &str, delay: Duration) -> BackendResult<String> {
        self.inner.send(body, delay).await
    }

    async fn stats(&self) -> BackendResult<(QueueStats, QueueStats)> {
        self.inner.stats().await
    }
}
