//! One retry vocabulary: a [`Backoff`] (initial delay, multiplier, cap, retries, jitter)
//! and a [`ShouldRetry`] predicate on errors. Every retry loop in the crate is built from
//! these two, and each remote is retried in exactly one layer, so one step never turns
//! into the product of several layers' attempts:
//!
//! | remote | retried by | the other layers |
//! |---|---|---|
//! | Stripe API | [`crate::stripe::api::StripeApiClient`]: its [`Backoff`], `Retry-After`, the key's token bucket | the worker never retries a fetch; a transient failure becomes a later delivery |
//! | state and dedupe stores in message processing (DynamoDB, SQLite, memory) | the worker's [`crate::worker::RetryPolicy`], within the message's budget, counting throttles for the concurrency limit | the DynamoDB client has the SDK's retries off ([`crate::backend::aws`]) |
//! | SQS (receive, delete, visibility, DLQ) | the AWS SDK (standard mode) | the poller pauses after a failed receive; nothing calls again on top |
//! | EventBridge `PutEvents` | the AWS SDK for a failed call; [`crate::backend::publish_all`] for entries a call rejected | - |
//!
//! After its layer gives up, a message's retry is its next delivery (the queue's
//! visibility backoff), and after `max_receive_count` deliveries the DLQ.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// An exponential backoff: `initial`, then each delay `multiplier` times the last, at
/// most `max_delay`, for at most `retries` retries after the first attempt, with full
/// jitter when `jitter` is on (so many callers failing together do not retry together).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// Growth per retry (>= 1).
    pub multiplier: f32,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// Retries after the first attempt (0: one attempt only).
    pub retries: usize,
    /// Randomise each delay (between the delay and twice it).
    pub jitter: bool,
}

impl Backoff {
    /// A doubling backoff with jitter.
    pub const fn doubling(initial: Duration, max_delay: Duration, retries: usize) -> Self {
        Backoff {
            initial,
            multiplier: 2.0,
            max_delay,
            retries,
            jitter: true,
        }
    }

    /// The schedule as `backon` builds it, its delays summing to at most `budget` when
    /// one is given (for `backon::Retryable::retry`).
    pub fn builder(&self, budget: Option<Duration>) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_factor(self.multiplier)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_total_delay(budget);
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }

    /// The delays before each retry, in order: at most [`Backoff::retries`] of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        self.builder(None).build()
    }
}

/// Whether an error is worth another attempt by the layer that retries its remote.
pub trait ShouldRetry {
    /// True when the same call may succeed if made again.
    fn should_retry(&self) -> bool;
}

impl ShouldRetry for crate::backend::BackendError {
    fn should_retry(&self) -> bool {
        self.is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use backon::Retryable;

    use super::*;
    use crate::backend::BackendError;

    const MS: Duration = Duration::from_millis(1);

    fn exact(retries: usize) -> Backoff {
        Backoff {
            jitter: false,
            ..Backoff::doubling(100 * MS, 350 * MS, retries)
        }
    }

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap_and_stop_after_the_retries() {
        // Whole milliseconds: the multiplier is an f32, so 2 x 100 ms is 200.000003 ms.
        let delays: Vec<u128> = exact(4).delays().map(|d| d.as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        assert_eq!(exact(0).delays().count(), 0);
    }

    #[test]
    fn jitter_stays_between_the_delay_and_twice_it() {
        for (plain, jittered) in exact(4)
            .delays()
            .zip(Backoff::doubling(100 * MS, 350 * MS, 4).delays())
        {
            assert!(
                jittered >= plain && jittered <= plain * 2,
                "{jittered:?} vs {plain:?}"
            );
        }
    }

    /// Run an always-failing call with `error` under `backoff`; the attempts made.
    async fn attempts_against(error: BackendError, backoff: Backoff) -> usize {
        let attempts = AtomicUsize::new(0);
        let result: Result<(), BackendError> = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(error.clone())
        })
        .retry(backoff.builder(None))
        .sleep(tokio::time::sleep)
        .when(ShouldRetry::should_retry)
        .await;
        assert!(result.is_err());
        attempts.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_as_scheduled_and_permanent_ones_never() {
        let transient = BackendError::Transient {
            operation: "test",
            message: "timeout".into(),
        };
        let started = tokio::time::Instant::now();
        assert_eq!(attempts_against(transient, exact(3)).await, 4);
        // Paused time: the sleeps are the schedule, 100 + 200 + 350 ms (the timer rounds
        // each up to its next millisecond).
        let slept = started.elapsed();
        assert!(slept >= 650 * MS && slept <= 653 * MS, "{slept:?}");
        let throttled = BackendError::Throttled {
            operation: "test",
            message: "slow down".into(),
        };
        assert_eq!(attempts_against(throttled, exact(2)).await, 3);
        let permanent = BackendError::Permanent {
            operation: "test",
            message: "access denied".into(),
        };
        let started = tokio::time::Instant::now();
        assert_eq!(attempts_against(permanent, exact(3)).await, 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_bounds_the_total_delay() {
        let attempts = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let _: Result<(), BackendError> = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err(BackendError::Transient {
                operation: "test",
                message: String::new(),
            })
        })
        .retry(exact(100).builder(Some(Duration::from_secs(1))))
        .sleep(tokio::time::sleep)
        .when(ShouldRetry::should_retry)
        .await;
        assert!(started.elapsed() <= Duration::from_secs(1));
        assert!(attempts.load(Ordering::Relaxed) >= 3);
    }
}
