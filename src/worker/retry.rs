//! The worker's retries (see [`crate::retry`] for where each remote is retried): store
//! calls retried in process within a budget, then the message's visibility backoff by
//! receive count.

use std::time::Duration;

use backon::ExponentialBuilder;

use crate::config::Config;
use crate::retry::Backoff;

/// How transient failures are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// In-process retries of one step (a store call).
    pub backoff: Backoff,
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
            backoff: Backoff {
                initial: Duration::from_millis(r.initial_delay_ms),
                multiplier: r.multiplier,
                max_delay: Duration::from_millis(r.max_delay_ms),
                retries: r.max_attempts,
                jitter: true,
            },
            budget: config.visibility_timeout() / 2,
            visibility_base: Duration::from_secs(r.visibility_backoff_base_secs),
            visibility_max: Duration::from_secs(r.visibility_backoff_max_secs),
        }
    }

    /// The in-process backoff for a step, given how much of the budget is left.
    pub fn backoff(&self, remaining_budget: Duration) -> ExponentialBuilder {
        self.backoff.builder(Some(remaining_budget))
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
}
