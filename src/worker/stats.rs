//! Counters of what the worker did, for the demo summary, `--until-idle` and tests. The
//! same calls feed the OpenTelemetry metrics ([`crate::telemetry::metrics`]), so each
//! count is taken in one place.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::Outcome;
use crate::domain::Domain;
use crate::telemetry::metrics;

/// Live counters, shared by every task of a pool.
#[derive(Debug)]
pub struct WorkerStats {
    received: AtomicU64,
    applied: AtomicU64,
    writes: AtomicU64,
    duplicates: AtomicU64,
    ignored: AtomicU64,
    retried: AtomicU64,
    in_progress_elsewhere: AtomicU64,
    released: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicI64,
    /// Dead letters per reason code, and ignored messages per reason (bounded sets).
    reasons: Mutex<Reasons>,
    /// Processing time (receive to outcome), in microseconds.
    latency_us: Mutex<hdrhistogram::Histogram<u64>>,
}

#[derive(Debug, Default)]
struct Reasons {
    dead_letter: BTreeMap<String, u64>,
    ignored: BTreeMap<&'static str, u64>,
    /// When a dead letter of each reason was last worth a warning.
    dead_letter_warned: BTreeMap<String, std::time::Instant>,
}

/// At most one warning per dead-letter reason this often: when every message goes to the
/// DLQ for one reason (an unknown tenant), a line per message would bury everything else;
/// the counts are in the stats, the progress line and the metrics.
pub const DEAD_LETTER_WARN_EVERY: Duration = Duration::from_secs(10);

/// A point-in-time copy of [`WorkerStats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Messages received from the queues.
    pub received: u64,
    /// Messages whose event was applied by at least one handler.
    pub applied: u64,
    /// State records written (changed) in all.
    pub writes: u64,
    /// Messages acknowledged as already applied.
    pub duplicates: u64,
    /// Messages acknowledged with nothing to do.
    pub ignored: u64,
    /// Retries: in-process retry attempts plus messages left for a later receive.
    pub retried: u64,
    /// Messages left invisible because another worker held the lease.
    pub in_progress_elsewhere: u64,
    /// Messages released at shutdown.
    pub released: u64,
    /// Messages sent to a DLQ.
    pub dead_lettered: u64,
    /// Dead letters by reason code.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Ignored messages by reason.
    pub ignored_reasons: BTreeMap<String, u64>,
    /// Messages being processed now.
    pub in_flight: i64,
    /// Median processing time, ms.
    pub p50_ms: f64,
    /// 99th percentile processing time, ms.
    pub p99_ms: f64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            received: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            in_progress_elsewhere: AtomicU64::new(0),
            released: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            reasons: Mutex::new(Reasons::default()),
            // Three significant digits up to an hour: enough for p99 of anything we do.
            latency_us: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("static histogram bounds are valid"),
            ),
        }
    }
}

impl WorkerStats {
    /// `count` messages were received from `domain`'s queue and are now in flight.
    pub fn record_received(&self, domain: Domain, count: usize) {
        self.received.fetch_add(count as u64, Ordering::Relaxed);
        self.in_flight.fetch_add(count as i64, Ordering::Relaxed);
        metrics::get().received(domain.as_str(), count as u64);
    }

    /// One in-process retry attempt of `operation` (e.g. `dedupe_claim`).
    pub fn record_retry(&self, operation: &'static str) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        metrics::get().retried(operation);
    }

    /// A message of `domain` ended with `outcome` after `elapsed`.
    pub fn record_outcome(&self, domain: Domain, outcome: &Outcome, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics::get().processed(domain.as_str(), outcome.label(), elapsed.as_secs_f64());
        let counter = match outcome {
            Outcome::Applied { writes } => {
                self.writes.fetch_add(*writes as u64, Ordering::Relaxed);
                &self.applied
            }
            Outcome::Duplicate => &self.duplicates,
            Outcome::Ignored { reason } => {
                *self.lock_reasons().ignored.entry(reason).or_default() += 1;
                &self.ignored
            }
            Outcome::InProgressElsewhere { .. } => &self.in_progress_elsewhere,
            Outcome::RetryLater { .. } => &self.retried,
            Outcome::DeadLetter(_) => &self.dead_lettered,
            Outcome::Released => &self.released,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let micros = elapsed.as_micros().clamp(1, 3_600_000_000) as u64;
        if let Ok(mut histogram) = self.latency_us.lock() {
            // Clamped into the bounds above, so recording cannot fail.
            let _ = histogram.record(micros);
        }
    }

    /// A dead letter of `domain` with reason code `kind`, counted once it is in the DLQ.
    /// Whether it is worth a warning: the first of its reason in
    /// [`DEAD_LETTER_WARN_EVERY`] (the others are worth a debug line).
    pub fn record_dead_letter(&self, domain: Domain, kind: &str) -> bool {
        metrics::get().dead_lettered(domain.as_str(), kind);
        let mut reasons = self.lock_reasons();
        *reasons.dead_letter.entry(kind.to_owned()).or_default() += 1;
        let now = std::time::Instant::now();
        match reasons.dead_letter_warned.get_mut(kind) {
            Some(last) if now.duration_since(*last) < DEAD_LETTER_WARN_EVERY => false,
            Some(last) => {
                *last = now;
                true
            }
            None => {
                reasons.dead_letter_warned.insert(kind.to_owned(), now);
                true
            }
        }
    }

    /// Messages in flight now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let reasons = self.lock_reasons();
        let (p50_ms, p99_ms) = match self.latency_us.lock() {
            Ok(h) if !h.is_empty() => (
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
            ),
            _ => (0.0, 0.0),
        };
        StatsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            in_progress_elsewhere: self.in_progress_elsewhere.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            dead_letter_reasons: reasons.dead_letter.clone(),
            ignored_reasons: reasons
                .ignored
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            in_flight: self.in_flight(),
            p50_ms,
            p99_ms,
        }
    }

    fn lock_reasons(&self) -> std::sync::MutexGuard<'_, Reasons> {
        // A poisoned lock only means a panic elsewhere mid-increment; the counts stay usable.
        self.reasons.lock().unwrap_or_else(|p| p.into_inner())
    }
}
