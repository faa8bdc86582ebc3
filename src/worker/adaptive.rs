//! Adaptive concurrency: each domain queue's in-flight limit moves between
//! `min_in_flight_per_queue` and `max_in_flight_per_queue` by AIMD, the rule TCP uses to
//! share a link: grow by one message per window of completions while nothing pushes
//! back, cut by a quarter when the downstream throttles (a [`BackendError::is_throttle`]
//! error) or when a window's mean processing latency rises past a threshold.
//!
//! Why: the right concurrency depends on what the downstream can take right now
//! (DynamoDB capacity, the Stripe API's rate limit, a shared SQLite file). A fixed high
//! limit turns a slow downstream into a storm of throttled calls and retries; a fixed
//! low limit leaves throughput unused. The controller finds the knee and tracks it.
//!
//! Pieces: [`Aimd`] is the pure controller (unit-tested step by step); [`QueueLimit`] is
//! the per-queue semaphore whose size it sets (permits added, or forgotten as they come
//! back); [`ConcurrencyLimits`] holds one per domain and is the gauge's source; the
//! task-local [`scope`] with [`observe`] (called by the processor for every backend error
//! it meets, retried or not) carries throttling errors seen deep inside the processing of
//! a message to the limit of that message's queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::{BackendError, PerDomain};
use crate::domain::Domain;

/// The share of the limit kept on a congestion signal (multiplicative decrease).
pub const DECREASE_FACTOR: f64 = 0.75;

/// How the per-queue limits adapt (from the `[worker]` configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveSettings {
    /// Whether limits adapt at all; when not, each queue's limit is the maximum.
    pub enabled: bool,
    /// The lowest a queue's limit goes, and where it starts.
    pub min: usize,
    /// A window whose mean processing latency is above this is a congestion signal;
    /// `None` reacts to throttling only.
    pub latency_threshold: Option<Duration>,
}

impl Default for AdaptiveSettings {
    fn default() -> Self {
        AdaptiveSettings {
            enabled: false,
            min: 1,
            latency_threshold: None,
        }
    }
}

/// The AIMD controller of one queue's limit. Pure: it is told what happened and answers
/// with the new limit; nothing here reads a clock.
///
/// - It starts at `min` in *slow start*: +1 per completion (doubling per window) until
///   the first congestion signal, so a fresh worker reaches a high limit in a few
///   windows instead of thousands.
/// - A *window* is `limit` completions, about one round of every permit. At the end of a
///   window without congestion the limit grows by one (additive increase), but only if
///   the queue used at least half of it: an idle queue's limit does not creep up to the
///   maximum and then hit the downstream all at once when a burst comes.
/// - A congestion signal (a throttle, or a window whose mean latency is past the
///   threshold) multiplies the limit by [`DECREASE_FACTOR`], at most once per window:
///   the calls already in flight when the first throttle came will see throttles too,
///   and they are the same event, not new ones.
#[derive(Debug, Clone)]
pub struct Aimd {
    min: usize,
    max: usize,
    limit: usize,
    latency_threshold: Option<Duration>,
    slow_start: bool,
    /// Completions left in the current window.
    window_left: usize,
    window_latency: Duration,
    window_completions: u32,
    window_peak_in_flight: usize,
    /// Completions to wait, after a decrease, before another signal counts.
    recovery_left: usize,
}

impl Aimd {
    /// A controller between `min` and `max` (`min` is raised to 1, `max` to `min`).
    pub fn new(min: usize, max: usize, latency_threshold: Option<Duration>) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Aimd {
            min,
            max,
            limit: min,
            latency_threshold,
            slow_start: true,
            window_left: min,
            window_latency: Duration::ZERO,
            window_completions: 0,
            window_peak_in_flight: 0,
            recovery_left: 0,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the controller is still in slow start.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The downstream throttled a call. Returns the new limit.
    pub fn on_throttle(&mut self) -> usize {
        if self.recovery_left == 0 {
            self.decrease();
        }
        self.limit
    }

    /// A message finished after `latency` with `in_flight` messages of this queue in
    /// flight (itself included). Returns the new limit.
    pub fn on_completion(&mut self, latency: Duration, in_flight: usize) -> usize {
        if self.recovery_left > 0 {
            self.recovery_left -= 1;
            if self.recovery_left == 0 {
                self.start_window();
            }
            return self.limit;
        }
        self.window_latency += latency;
        self.window_completions += 1;
        self.window_peak_in_flight = self.window_peak_in_flight.max(in_flight);
        if self.slow_start && 2 * in_flight >= self.limit {
            self.limit = (self.limit + 1).min(self.max);
        }
        self.window_left = self.window_left.saturating_sub(1);
        if self.window_left == 0 {
            self.end_window();
        }
        self.limit
    }

    fn end_window(&mut self) {
        let mean = self.window_latency / self.window_completions.max(1);
        if self.latency_threshold.is_some_and(|t| mean > t) {
            self.decrease();
            return;
        }
        if !self.slow_start && 2 * self.window_peak_in_flight >= self.limit {
            self.limit = (self.limit + 1).min(self.max);
        }
        self.start_window();
    }

    fn decrease(&mut self) {
        self.slow_start = false;
        let cut = (self.limit as f64 * DECREASE_FACTOR).floor() as usize;
        self.limit = cut.clamp(self.min, self.max);
        self.recovery_left = self.limit;
        self.start_window();
    }

    fn start_window(&mut self) {
        self.window_left = self.limit;
        self.window_latency = Duration::ZERO;
        self.window_completions = 0;
        self.window_peak_in_flight = 0;
    }
}

/// One queue's in-flight limit: a semaphore whose size the controller sets. Fixed (the
/// configured maximum) when adaptive concurrency is off.
#[derive(Debug)]
pub struct QueueLimit {
    semaphore: Arc<Semaphore>,
    controller: Option<Mutex<Aimd>>,
    /// The current limit, for the gauge.
    limit: AtomicUsize,
    /// Permits held now.
    in_use: AtomicUsize,
    /// Permits to take out of circulation as they are returned: a decrease larger than
    /// the permits free at that moment is paid off as messages finish.
    debt: AtomicUsize,
    /// Throttling errors observed.
    throttles: AtomicU64,
}

impl QueueLimit {
    /// A fixed limit of `max` permits.
    pub fn fixed(max: usize) -> Arc<Self> {
        Arc::new(QueueLimit::with(max, None))
    }

    /// A limit adapting between `settings.min` and `max` (fixed at `max` when
    /// `settings.enabled` is false).
    pub fn new(max: usize, settings: &AdaptiveSettings) -> Arc<Self> {
        if !settings.enabled {
            return QueueLimit::fixed(max);
        }
        let aimd = Aimd::new(settings.min, max, settings.latency_threshold);
        Arc::new(QueueLimit::with(aimd.limit(), Some(Mutex::new(aimd))))
    }

    fn with(limit: usize, controller: Option<Mutex<Aimd>>) -> Self {
        QueueLimit {
            semaphore: Arc::new(Semaphore::new(limit)),
            controller,
            limit: AtomicUsize::new(limit),
            in_use: AtomicUsize::new(0),
            debt: AtomicUsize::new(0),
            throttles: AtomicU64::new(0),
        }
    }

    /// The current limit (the gauge `worker.concurrency.limit`).
    pub fn current(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Permits held now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Throttling errors observed so far.
    pub fn throttles(&self) -> u64 {
        self.throttles.load(Ordering::Relaxed)
    }

    /// Whether the limit adapts.
    pub fn is_adaptive(&self) -> bool {
        self.controller.is_some()
    }

    /// Wait for a permit.
    pub async fn acquire(self: &Arc<Self>) -> LimitPermit {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .expect("semaphore open");
        self.permit(permit)
    }

    /// A permit if one is free now.
    pub fn try_acquire(self: &Arc<Self>) -> Option<LimitPermit> {
        let permit = Arc::clone(&self.semaphore).try_acquire_owned().ok()?;
        Some(self.permit(permit))
    }

    fn permit(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> LimitPermit {
        self.in_use.fetch_add(1, Ordering::Relaxed);
        LimitPermit {
            permit: Some(permit),
            limit: Arc::clone(self),
        }
    }

    /// Feed an error to the controller: throttles are congestion signals.
    pub fn observe_error(&self, error: &BackendError) {
        if error.is_throttle() {
            self.observe_throttles(1);
        }
    }

    /// `count` throttling errors were met by one message of this queue (see
    /// [`crate::worker::Processed::throttles`]).
    pub fn observe_throttles(&self, count: u32) {
        if count == 0 {
            return;
        }
        self.throttles
            .fetch_add(u64::from(count), Ordering::Relaxed);
        if let Some(controller) = &self.controller {
            let mut aimd = controller.lock().unwrap_or_else(|p| p.into_inner());
            let before = aimd.limit();
            let after = aimd.on_throttle();
            self.resize(before, after);
        }
    }

    /// A message of this queue finished after `latency`.
    pub fn record_completion(&self, latency: Duration) {
        if let Some(controller) = &self.controller {
            let in_flight = self.in_use();
            let mut aimd = controller.lock().unwrap_or_else(|p| p.into_inner());
            let before = aimd.limit();
            let after = aimd.on_completion(latency, in_flight);
            self.resize(before, after);
        }
    }

    /// Move the semaphore from `before` to `after` permits. Called under the controller's
    /// lock, so resizes do not interleave.
    fn resize(&self, before: usize, after: usize) {
        if after > before {
            let mut grow = after - before;
            // Pay off debt first: those permits are still out, and will now come back.
            while grow > 0 {
                let debt = self.debt.load(Ordering::Acquire);
                if debt == 0 {
                    break;
                }
                let pay = debt.min(grow);
                if self
                    .debt
                    .compare_exchange(debt, debt - pay, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    grow -= pay;
                }
            }
            self.semaphore.add_permits(grow);
        } else if after < before {
            let shrink = before - after;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        self.limit.store(after, Ordering::Relaxed);
    }

    /// Take one unit of debt, if any: the returning permit is then forgotten.
    fn take_debt(&self) -> bool {
        self.debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok()
    }
}

/// A permit of a [`QueueLimit`]; returned (or forgotten, after a decrease) on drop.
#[derive(Debug)]
pub struct LimitPermit {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<QueueLimit>,
}

impl LimitPermit {
    /// The limit this permit belongs to.
    pub fn limit(&self) -> &Arc<QueueLimit> {
        &self.limit
    }
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        self.limit.in_use.fetch_sub(1, Ordering::Relaxed);
        if let Some(permit) = self.permit.take()
            && self.limit.take_debt()
        {
            permit.forget();
        }
    }
}

/// The limits of every domain queue: what the pool acquires from, and what the
/// `worker.concurrency.limit` gauge reads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimits {
    limits: Arc<PerDomain<Arc<QueueLimit>>>,
}

impl ConcurrencyLimits {
    /// One limit per domain, each up to `max_per_queue`.
    pub fn new(max_per_queue: usize, settings: &AdaptiveSettings) -> Self {
        ConcurrencyLimits {
            limits: Arc::new(PerDomain::from_fn(|_| {
                QueueLimit::new(max_per_queue, settings)
            })),
        }
    }

    /// The limit of `domain`'s queue.
    pub fn get(&self, domain: Domain) -> &Arc<QueueLimit> {
        self.limits.get(domain)
    }

    /// The current limit of `domain`'s queue (the gauge's value).
    pub fn current(&self, domain: Domain) -> usize {
        self.get(domain).current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Complete `n` messages with the queue using `in_flight` permits.
    fn complete(aimd: &mut Aimd, n: usize, in_flight: usize, latency: Duration) -> usize {
        for _ in 0..n {
            aimd.on_completion(latency, in_flight);
        }
        aimd.limit()
    }

    #[test]
    fn slow_start_doubles_per_window_up_to_the_max() {
        let mut aimd = Aimd::new(4, 20, None);
        assert_eq!(aimd.limit(), 4);
        // Fully used: +1 per completion, so one window of 4 doubles the limit.
        assert_eq!(complete(&mut aimd, 4, 4, MS), 8);
        assert_eq!(complete(&mut aimd, 8, 8, MS), 16);
        assert_eq!(complete(&mut aimd, 16, 16, MS), 20);
        assert!(aimd.in_slow_start());
    }

    #[test]
    fn a_throttle_cuts_by_a_quarter_once_per_window_then_growth_is_additive() {
        let mut aimd = Aimd::new(2, 1000, None);
        complete(&mut aimd, 98, 1000, MS);
        assert_eq!(aimd.limit(), 100);
        assert_eq!(aimd.on_throttle(), 75);
        assert!(!aimd.in_slow_start());
        // The same burst's other throttles do not cut again.
        assert_eq!(aimd.on_throttle(), 75);
        assert_eq!(aimd.on_throttle(), 75);
        // Recovery: one window (75 completions) with no change.
        assert_eq!(complete(&mut aimd, 75, 75, MS), 75);
        // Then +1 per window of `limit` completions.
        assert_eq!(complete(&mut aimd, 74, 75, MS), 75);
        assert_eq!(complete(&mut aimd, 1, 75, MS), 76);
        assert_eq!(complete(&mut aimd, 76, 76, MS), 77);
        // After the recovery window, a new throttle cuts again.
        assert_eq!(aimd.on_throttle(), 57);
    }

    #[test]
    fn the_limit_stays_within_min_and_max() {
        let mut aimd = Aimd::new(3, 4, None);
        assert_eq!(complete(&mut aimd, 50, 4, MS), 4);
        for _ in 0..10 {
            aimd.on_throttle();
            complete(&mut aimd, 10, 4, MS);
        }
        assert_eq!(aimd.on_throttle(), 3);
        assert_eq!(Aimd::new(0, 0, None).limit(), 1);
    }

    #[test]
    fn an_underused_limit_does_not_grow() {
        let mut aimd = Aimd::new(2, 100, None);
        assert_eq!(complete(&mut aimd, 6, 100, MS), 8);
        // Never more than 3 of 8 in flight: slow start stops.
        assert_eq!(complete(&mut aimd, 100, 3, MS), 8);
        aimd.on_throttle();
        complete(&mut aimd, 6, 1, MS);
        // Never more than 2 of 6: no additive increase either.
        assert_eq!(complete(&mut aimd, 100, 2, MS), 6);
    }

    #[test]
    fn a_slow_window_is_a_congestion_signal() {
        let mut aimd = Aimd::new(10, 100, Some(Duration::from_millis(50)));
        aimd.on_throttle();
        complete(&mut aimd, 10, 10, MS);
        assert_eq!(aimd.limit(), 10);
        // A window whose mean is 40 ms: under the threshold, the limit grows.
        complete(&mut aimd, 5, 10, 20 * MS);
        assert_eq!(complete(&mut aimd, 5, 10, 60 * MS), 11);
        // A window whose mean is 70 ms: cut.
        assert_eq!(complete(&mut aimd, 11, 11, 70 * MS), 10);
    }

    #[tokio::test]
    async fn a_queue_limit_shrinks_as_permits_come_back_and_grows_again() {
        let settings = AdaptiveSettings {
            enabled: true,
            min: 4,
            latency_threshold: None,
        };
        let limit = QueueLimit::new(100, &settings);
        assert_eq!(limit.current(), 4);
        let mut held: Vec<LimitPermit> = Vec::new();
        while let Some(p) = limit.try_acquire() {
            held.push(p);
        }
        assert_eq!(held.len(), 4);
        // Four completions at full use: slow start takes the limit to 8.
        for _ in 0..4 {
            limit.record_completion(MS);
        }
        assert_eq!(limit.current(), 8);
        while let Some(p) = limit.try_acquire() {
            held.push(p);
        }
        assert_eq!(held.len(), 8);
        // 8 -> 6 while every permit is out: two are forgotten as they come back.
        limit.observe_error(&BackendError::Throttled {
            operation: "test",
            message: String::new(),
        });
        assert_eq!(limit.current(), 6);
        assert_eq!(limit.throttles(), 1);
        // Three come back: two are forgotten, one is free.
        held.truncate(5);
        let extra = limit.try_acquire().expect("one free");
        assert!(limit.try_acquire().is_none(), "six in use: the new limit");
        assert_eq!(limit.in_use(), 6);
        drop(extra);
        drop(held);
        assert_eq!(limit.semaphore.available_permits(), 6);
        // Transient errors are not congestion.
        limit.observe_error(&BackendError::Transient {
            operation: "test",
            message: String::new(),
        });
        assert_eq!(limit.current(), 6);
    }

    #[test]
    fn throttles_a_message_met_cut_its_queue_limit_once() {
        let settings = AdaptiveSettings {
            enabled: true,
            min: 4,
            latency_threshold: None,
        };
        let limit = QueueLimit::new(100, &settings);
        let mut held = Vec::new();
        while let Some(p) = limit.try_acquire() {
            held.push(p);
        }
        for _ in 0..held.len() {
            limit.record_completion(MS);
        }
        assert_eq!(limit.current(), 8, "slow start from the minimum of 4");
        limit.observe_throttles(0);
        assert_eq!((limit.throttles(), limit.current()), (0, 8));
        // Three throttles in one message: counted, and one cut (8 -> 6), not three.
        limit.observe_throttles(3);
        assert_eq!((limit.throttles(), limit.current()), (3, 6));
    }

    #[test]
    fn a_disabled_limit_is_fixed_at_the_max() {
        let limit = QueueLimit::new(64, &AdaptiveSettings::default());
        assert!(!limit.is_adaptive());
        limit.record_completion(Duration::from_secs(60));
        assert_eq!(limit.current(), 64);
    }
}
