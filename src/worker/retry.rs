//! Retry schedules as data: in-process retries within a budget, then visibility backoff
//! by receive count.

use std::time::Duration;

use backon::ExponentialBuilder;

use crate::config::Config;

/// How transient failures are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// First in-process delay.
    pub initial: Duration,
    /// Growth per attempt.
    pub multiplier: f32,
    /// Longest in-process delay.
    pub max_delay: Duration,
    /// In-process attempts after the first, per step.
    pub max_attempts: usize,
    /// Total in-process delay per message, kept below the visibility timeout so a message
    /// is never redelivered while we still retry it.
    pub budget: Duration,
    /// Visibility backoff base (doubles per receive).
    pub visibility_base: Duration,
    /// Visibility backoff cap.
    pub visibility_max: Duration,
}

impl RetryPolicy {
    /// The policy a configuration describes; the budget is half the visibility timeout.
    pub fn from_config(config: &Config) -> Self {
        let r = &config.retry;
        RetryPolicy {
            initial: Duration::from_millis(r.initial_delay_ms),
            multiplier: r.multiplier,
            max_delay: Duration::from_millis(r.max_delay_ms),
            max_attempts: r.max_attempts,
            budget: config.visibility_timeout() / 2,
            visibility_base: Duration::from_secs(r.visibility_backoff_base_secs),
            visibility_max: Duration::from_secs(r.visibility_backoff_max_secs),
        }
    }

    /// The in-process backoff for a step, given how much of the budget is left.
    pub fn backoff(&self, remaining_budget: Duration) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_factor(self.multiplier)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts)
            .with_total_delay(Some(remaining_budget))
            .with_jitter()
    }

    /// How long a message stays invisible after its `receive_count`-th receive failed:
    /// base * 2^(receive_count - 1), capped, never below one second.
    pub fn visibility_backoff(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(20);
        let delay = self.visibility_base.saturating_mul(1 << exponent);
        delay.min(self.visibility_max).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_backoff_doubles_per_receive_and_is_capped() {
        let policy = RetryPolicy::from_config(&Config::default());
        assert_eq!(policy.visibility_backoff(1), Duration::from_secs(2));
        assert_eq!(policy.visibility_backoff(2), Duration::from_secs(4));
        assert_eq!(policy.visibility_backoff(4), Duration::from_secs(16));
        assert_eq!(policy.visibility_backoff(40), Duration::from_secs(300));
        assert_eq!(policy.visibility_backoff(0), Duration::from_secs(2));
    }

    #[test]
    fn in_process_budget_stays_below_the_visibility_timeout() {
        let config = Config::default();
        let policy = RetryPolicy::from_config(&config);
        assert!(policy.budget < config.visibility_timeout());
    }

    #[tokio::test]
    async fn backoff_stops_when_the_budget_is_spent() {
        use backon::Retryable;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let policy = RetryPolicy {
            initial: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_attempts: 1_000,
            ..RetryPolicy::from_config(&Config::default())
        };
        let attempts = AtomicUsize::new(0);
        let budget = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        let result: Result<(), &str> = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err("down")
        })
        .retry(policy.backoff(budget))
        .sleep(tokio::time::sleep)
        .await;
        assert!(result.is_err());
        assert!(attempts.load(Ordering::Relaxed) > 2);
        // The budget bounds the total delay (plus the attempts' own time).
        assert!(started.elapsed() < budget + Duration::from_millis(100));
    }
}
