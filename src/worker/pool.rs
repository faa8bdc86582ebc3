//! The worker pool: pollers per domain queue, permits for backpressure, one task per
//! message, outcomes turned into queue actions, heartbeats, and a graceful drain.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing::field::Empty;

use super::acker::{AckSender, spawn_acker};
use super::adaptive::{AdaptiveSettings, ConcurrencyLimits, LimitPermit, QueueLimit};
use super::{DomainQueue, Outcome, Processor, RetryPolicy};
use crate::backend::{DedupeStore, PerDomain, Queue, ReceivedMessage, StateStore};
use crate::config::Config;
use crate::domain::Domain;
use crate::telemetry::metrics::{self, time_backend};
use crate::telemetry::trace::MESSAGING_SYSTEM_SQS;

/// How the pool polls and drains.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The domains whose queues are polled.
    pub domains: Vec<Domain>,
    /// Concurrent long-polls per queue.
    pub pollers_per_queue: usize,
    /// In-flight messages per queue at most.
    pub max_in_flight_per_queue: usize,
    /// In-flight messages across all queues at most.
    pub max_in_flight: usize,
    /// Messages per receive (1..=10).
    pub receive_batch_size: usize,
    /// Long-poll wait.
    pub wait_time: Duration,
    /// The queues' visibility timeout (heartbeats extend it by this much).
    pub visibility_timeout: Duration,
    /// Receives after which a message that is still failing goes to the DLQ.
    pub max_receive_count: u32,
    /// How long in-flight messages may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// How long a delete may wait to fill a batch.
    pub ack_flush: Duration,
    /// Whether and how the per-queue limits adapt (between a minimum and
    /// `max_in_flight_per_queue`).
    pub adaptive: AdaptiveSettings,
}

impl PoolSettings {
    /// The settings a configuration describes, for every domain.
    pub fn from_config(config: &Config) -> Self {
        let w = &config.worker;
        PoolSettings {
            domains: Domain::ALL.to_vec(),
            pollers_per_queue: w.pollers_per_queue,
            max_in_flight_per_queue: w.max_in_flight_per_queue,
            max_in_flight: w.max_in_flight,
            receive_batch_size: w.receive_batch_size,
            wait_time: Duration::from_secs(w.wait_time_secs),
            visibility_timeout: config.visibility_timeout(),
            max_receive_count: w.max_receive_count,
            shutdown_grace: Duration::from_secs(w.shutdown_grace_secs),
            ack_flush: Duration::from_millis(w.ack_flush_ms),
            adaptive: AdaptiveSettings {
                enabled: w.adaptive_concurrency,
                min: w.min_in_flight_per_queue,
                latency_threshold: (w.adaptive_latency_threshold_ms > 0)
                    .then(|| Duration::from_millis(w.adaptive_latency_threshold_ms)),
            },
        }
    }
}

/// Run the pool until `shutdown` is cancelled, then drain: stop receiving, let in-flight
/// messages finish within the grace period, release the rest, flush deletes. Callers
/// build a [`super::Worker`] and run it.
pub(super) async fn run_pool<Q, D, S>(
    queues: Arc<PerDomain<Q>>,
    processor: Arc<Processor<D, S>>,
    settings: PoolSettings,
    limits: ConcurrencyLimits,
    shutdown: CancellationToken,
) where
    Q: Queue,
    D: DedupeStore,
    S: StateStore,
{
    let global = Arc::new(Semaphore::new(settings.max_in_flight));
    let gauge = tokio::spawn(export_limits(
        settings.max_in_flight,
        settings.domains.clone(),
        limits.clone(),
        shutdown.clone(),
    ));
    // Cancelled when the grace period ends: tasks still running then release their message.
    let hard_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut pollers = Vec::new();
    let mut ackers = Vec::new();
    for &domain in &settings.domains {
        let queue = DomainQueue::new(Arc::clone(&queues), domain);
        let per_queue = Arc::clone(limits.get(domain));
        for _ in 0..settings.pollers_per_queue {
            // One acker per poller: an acker deletes one batch at a time, so a single one
            // per queue caps the queue at 10 messages per delete round trip (500/s at
            // 20 ms). Per poller, delete capacity grows with receive capacity.
            let (acks, acker) = spawn_acker(queue.clone(), settings.ack_flush);
            ackers.push(acker);
            let poller = Poller {
                queue: queue.clone(),
                processor: Arc::clone(&processor),
                settings: settings.clone(),
                global: Arc::clone(&global),
                per_queue: Arc::clone(&per_queue),
                acks: acks.clone(),
                tracker: tracker.clone(),
                hard_stop: hard_stop.clone(),
            };
            pollers.push(tokio::spawn(poller.run(shutdown.clone())));
        }
    }
    for poller in pollers {
        if let Err(e) = poller.await {
            tracing::error!(error = %e, "poller task failed");
        }
    }
    tracker.close();
    if tokio::time::timeout(settings.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = processor.stats().in_flight(),
            "shutdown grace period ended; releasing the messages still in flight"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
    // Claims of lease handlers cut short by the hard stop are being released: let them
    // finish, so the next worker can claim those events at once.
    processor.finish_releases(RELEASE_GRACE).await;
    // Every poller and task has dropped its sender by now: each acker flushes and ends.
    for acker in ackers {
        if let Err(e) = acker.await {
            tracing::error!(error = %e, "acknowledgement task failed");
        }
    }
    gauge.abort();
}

/// How long the drain waits for claim releases after the in-flight messages ended.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

/// How often the `concurrency.limit` gauge is refreshed: adaptive limits move with every
/// completion, so the gauge samples them rather than recording each change.
const LIMIT_GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Record the global and per-queue in-flight limits now and every
/// [`LIMIT_GAUGE_INTERVAL`] until `shutdown`.
async fn export_limits(
    global: usize,
    domains: Vec<Domain>,
    limits: ConcurrencyLimits,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(LIMIT_GAUGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let per_queue: Vec<(&'static str, usize)> = domains
            .iter()
            .map(|&d| (d.as_str(), limits.current(d)))
            .collect();
        metrics::get().concurrency_limits(global, &per_queue);
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One long-poll loop over one queue.
struct Poller<Q, D, S> {
    queue: DomainQueue<Q>,
    processor: Arc<Processor<D, S>>,
    settings: PoolSettings,
    global: Arc<Semaphore>,
    per_queue: Arc<QueueLimit>,
    acks: AckSender,
    tracker: TaskTracker,
    hard_stop: CancellationToken,
}

/// The permits one in-flight message holds; dropping them lets a poller receive again.
struct Permits {
    queue: LimitPermit,
    _global: OwnedSemaphorePermit,
}

impl<Q: Queue, D: DedupeStore, S: StateStore> Poller<Q, D, S> {
    async fn run(self, shutdown: CancellationToken) {
        let mut receive_errors = 0u32;
        // After an empty receive, ask for one message: a long poll on an idle queue then
        // pins one permit instead of a batch's worth that busy queues could use.
        let mut batch = self.settings.receive_batch_size;
        loop {
            // Never receive more than we can start: take permits first.
            let first = tokio::select! {
                permits = self.acquire() => permits,
                _ = shutdown.cancelled() => break,
            };
            let mut permits = vec![first];
            while permits.len() < batch {
                match self.try_acquire() {
                    Some(p) => permits.push(p),
                    None => break,
                }
            }
            // A receive cut short by shutdown may have taken messages: they become visible
            // again when their visibility timeout ends. Nothing is lost.
            let receive_span = tracing::debug_span!(
                "receive",
                otel.name = %format_args!("receive {}", self.queue.name()),
                otel.kind = "client",
                messaging.system = MESSAGING_SYSTEM_SQS,
                messaging.operation.type = "receive",
                messaging.operation.name = "receive",
                messaging.destination.name = self.queue.name(),
                messaging.batch.message_count = Empty,
            );
            let receive = time_backend(
                "queue_receive",
                self.queue.receive(permits.len(), self.settings.wait_time),
            )
            .instrument(receive_span.clone());
            let received = tokio::select! {
                r = receive => r,
                _ = shutdown.cancelled() => break,
            };
            let messages = match received {
                Ok(messages) => {
                    receive_errors = 0;
                    batch = if messages.is_empty() {
                        1
                    } else {
                        self.settings.receive_batch_size
                    };
                    messages
                }
                Err(error) => {
                    self.per_queue.observe_error(&error);
                    receive_errors += 1;
                    let pause = Duration::from_millis(100 * 2u64.pow(receive_errors.min(6)));
                    tracing::warn!(queue = self.queue.name(), %error, ?pause, "receive failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            receive_span.record("messaging.batch.message_count", messages.len() as i64);
            drop(receive_span);
            self.processor
                .stats()
                .record_received(self.queue.domain(), messages.len());
            // Surplus permits (fewer messages than asked for) are dropped here.
            for (message, permits) in messages.into_iter().zip(permits) {
                self.tracker.spawn(handle_message(
                    self.queue.clone(),
                    Arc::clone(&self.processor),
                    self.settings.clone(),
                    message,
                    self.acks.clone(),
                    permits,
                    self.hard_stop.clone(),
                ));
            }
        }
    }

    async fn acquire(&self) -> Permits {
        // Semaphores here are never closed, so acquiring cannot fail.
        let queue = self.per_queue.acquire().await;
        let global = Arc::clone(&self.global)
            .acquire_owned()
            .await
            .expect("semaphore open");
        Permits {
            queue,
            _global: global,
        }
    }

    fn try_acquire(&self) -> Option<Permits> {
        let queue = self.per_queue.try_acquire()?;
        let global = Arc::clone(&self.global).try_acquire_owned().ok()?;
        Some(Permits {
            queue,
            _global: global,
        })
    }
}

/// Process one message, keep it invisible while that takes long, then act on the outcome.
async fn handle_message<Q: Queue, D: DedupeStore, S: StateStore>(
    queue: DomainQueue<Q>,
    processor: Arc<Processor<D, S>>,
    settings: PoolSettings,
    message: ReceivedMessage,
    acks: AckSender,
    permits: Permits,
    hard_stop: CancellationToken,
) {
    let started = tokio::time::Instant::now();
    let domain = queue.domain();
    let limit = Arc::clone(permits.queue.limit());
    let work = processor.process_one(domain, &message);
    let (outcome, span) = tokio::select! {
        processed = with_heartbeat(&queue, &message, settings.visibility_timeout, work) => {
            // Throttles met inside the processing, even those a retry hid, tighten this
            // queue's limit.
            limit.observe_throttles(processed.throttles);
            processed.span.record("otel.name", format!("process {}", queue.name()));
            processed.span.record("messaging.destination.name", queue.name());
            (processed.outcome, processed.span)
        }
        _ = hard_stop.cancelled() => (Outcome::Released, tracing::Span::none()),
    };
    let elapsed = started.elapsed();
    processor.stats().record_outcome(domain, &outcome, elapsed);
    limit.record_completion(elapsed);
    let now_ms = processor.now_ms();
    let ack_span = tracing::debug_span!(
        parent: &span,
        "ack",
        otel.name = %format_args!("settle {}", queue.name()),
        otel.kind = "client",
        messaging.system = MESSAGING_SYSTEM_SQS,
        messaging.operation.type = "settle",
        messaging.destination.name = queue.name(),
        stripe_worker.action = outcome_action(&outcome),
    );
    settle(
        &queue, &processor, &settings, message, outcome, &acks, now_ms,
    )
    .instrument(ack_span)
    .await;
    drop(span);
    drop(permits);
}

/// What the pool does with a message for `outcome` (the `ack` span's action).
fn outcome_action(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Applied { .. } | Outcome::Duplicate | Outcome::Ignored { .. } => "delete",
        Outcome::DeadLetter(_) => "dead_letter",
        Outcome::RetryLater { .. } | Outcome::InProgressElsewhere { .. } => "change_visibility",
        Outcome::Released => "release",
    }
}

/// Run `work`, extending the message's visibility every half timeout until it finishes,
/// so a slow message is not delivered to a second worker meanwhile.
async fn with_heartbeat<Q: Queue, T>(
    queue: &DomainQueue<Q>,
    message: &ReceivedMessage,
    visibility_timeout: Duration,
    work: impl Future<Output = T>,
) -> T {
    let period = (visibility_timeout / 2).max(Duration::from_millis(500));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticker.tick() => {
                let entry = [(message.receipt.clone(), visibility_timeout)];
                if let Err(error) = queue.change_visibility_batch(&entry).await {
                    tracing::warn!(queue = queue.name(), %error, "visibility heartbeat failed");
                }
            }
        }
    }
}

/// Turn an outcome into the queue action: delete, change visibility, or dead-letter.
async fn settle<Q: Queue, D: DedupeStore, S: StateStore>(
    queue: &DomainQueue<Q>,
    processor: &Processor<D, S>,
    settings: &PoolSettings,
    message: ReceivedMessage,
    outcome: Outcome,
    acks: &AckSender,
    now_ms: i64,
) {
    let visibility = match outcome {
        Outcome::Applied { .. } | Outcome::Duplicate | Outcome::Ignored { .. } => {
            if acks.send(message.receipt).await.is_err() {
                tracing::error!(queue = queue.name(), "acknowledgement task ended early");
            }
            return;
        }
        Outcome::DeadLetter(reason) => {
            dead_letter(queue, processor, &message, &reason).await;
            return;
        }
        Outcome::RetryLater {
            kind,
            message: error,
        } => {
            if message.receive_count >= settings.max_receive_count {
                let reason = crate::backend::DeadLetterReason {
                    kind: "retries_exhausted".to_owned(),
                    message: format!(
                        "still failing after {} receives: {kind}: {error}",
                        message.receive_count
                    ),
                    handler: None,
                };
                dead_letter(queue, processor, &message, &reason).await;
                return;
            }
            processor
                .settings()
                .retry
                .visibility_backoff(message.receive_count)
        }
        Outcome::InProgressElsewhere { until_ms } => {
            let lease_left = Duration::from_millis((until_ms - now_ms).max(0) as u64);
            in_progress_backoff(
                lease_left,
                message.receive_count,
                &processor.settings().retry,
            )
        }
        Outcome::Released => Duration::ZERO,
    };
    let entry = [(message.receipt.clone(), visibility)];
    match time_backend(
        "queue_change_visibility",
        queue.change_visibility_batch(&entry),
    )
    .await
    {
        Ok(failures) if failures.failed.is_empty() => {}
        Ok(_) | Err(_) => tracing::warn!(
            queue = queue.name(),
            message_id = message.message_id,
            "could not change visibility; the message will be delivered again after its timeout"
        ),
    }
}

/// How long to wait before looking again at a message whose event a lease handler holds
/// a claim on elsewhere. The first time it is most likely a duplicate delivered at the
/// same moment: look again soon. After that, until the lease ends (a crashed worker's
/// claim), so a crash costs the message at most one extra receive.
fn in_progress_backoff(lease_left: Duration, receive_count: u32, retry: &RetryPolicy) -> Duration {
    let wait = if receive_count <= 1 {
        lease_left.min(retry.visibility_backoff(1))
    } else {
        lease_left
    };
    wait.clamp(Duration::from_secs(1), Duration::from_secs(43_200))
}

/// Send to the DLQ with the reason. If that fails the message stays in its queue and is
/// delivered again after its visibility timeout: it is never dropped.
async fn dead_letter<Q: Queue, D: DedupeStore, S: StateStore>(
    queue: &DomainQueue<Q>,
    processor: &Processor<D, S>,
    message: &ReceivedMessage,
    reason: &crate::backend::DeadLetterReason,
) {
    match time_backend("queue_dead_letter", queue.dead_letter(message, reason)).await {
        Ok(()) => {
            let worth_a_warning = processor
                .stats()
                .record_dead_letter(queue.domain(), &reason.kind);
            if worth_a_warning {
                tracing::warn!(
                    queue = queue.name(),
                    message_id = message.message_id,
                    reason = reason.kind,
                    detail = reason.message,
                    "message dead-lettered (more for this reason within 10s are logged at \
                     debug; the counts are in the progress line and the metrics)"
                );
            } else {
                tracing::debug!(
                    queue = queue.name(),
                    message_id = message.message_id,
                    reason = reason.kind,
                    detail = reason.message,
                    "message dead-lettered"
                );
            }
        }
        Err(error) => tracing::error!(
            queue = queue.name(),
            message_id = message.message_id,
            %error,
            "dead-lettering failed; the message will be delivered again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_claim_held_elsewhere_is_looked_at_again_soon_once_then_after_the_lease() {
        let retry = RetryPolicy::from_config(&Config::default());
        let lease_left = Duration::from_secs(50);
        assert_eq!(
            in_progress_backoff(lease_left, 1, &retry),
            Duration::from_secs(2)
        );
        assert_eq!(in_progress_backoff(lease_left, 2, &retry), lease_left);
        assert_eq!(
            in_progress_backoff(Duration::ZERO, 3, &retry),
            Duration::from_secs(1)
        );
    }
}
