//! The Little's-law bound: what throughput a given concurrency can reach at best when
//! every message must wait for the injected latencies on its critical path.
//!
//! Little's law says that in a steady state `in flight = throughput x time in system`.
//! The pool holds one permit per message from before the receive until its outcome is
//! settled, so with `C` permits all in use the throughput is at most `C / T`, where `T`
//! is the time a permit is held. The engine's own CPU time makes `T` longer; the bound
//! counts only the injected latency, so `throughput / bound` (the efficiency) is the
//! share of the ideal the engine reaches. A shortfall means something other than the
//! downstream holds permits: CPU saturation, lock contention, too few pollers, permits
//! held by pollers of queues with nothing to receive.
//!
//! `T` for one message, from the order of calls in `worker::pool` and `process_one`:
//!
//! - **receive**: the whole SQS latency. Permits are taken before the receive, and every
//!   message of a batch waits for the same call: batching divides the number of calls
//!   by up to 10, not the time a permit waits.
//! - **claim, put(s), complete** (and release or reads if any): one DynamoDB latency each,
//!   one after the other. Their number depends on the event mix (handlers per event,
//!   records per handler, duplicates that stop at the claim), so it is counted during the
//!   run rather than assumed.
//! - **change visibility / dead-letter**: one SQS latency each, for the messages whose
//!   outcome needs one, while the permit is still held.
//! - **delete**: none. A successful message hands its receipt to the batching acker and
//!   releases its permits; the delete (batched by 10, after up to `ack_flush_ms`) happens
//!   off the permit path. It shows in end-to-end latency, not in the bound.

use std::time::Duration;

/// Calls on one message's critical path, averaged over a run.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct PathCalls {
    /// Receives a message waited for: 1 by construction (see the module doc).
    pub receive: f64,
    /// Dedupe and state calls per message (claim, put, complete, release, reads).
    pub store: f64,
    /// Change-visibility and dead-letter calls per message made while holding permits.
    pub settle: f64,
}

/// The time one permit is held, from the injected latencies alone.
pub fn critical_path(
    calls: PathCalls,
    queue_latency: Duration,
    store_latency: Duration,
) -> Duration {
    queue_latency.mul_f64(calls.receive + calls.settle) + store_latency.mul_f64(calls.store)
}

/// The most events per second `concurrency` permits can carry when each is held for
/// `critical_path`; `None` without injected latency (no bound: the engine is the limit).
pub fn bound(concurrency: usize, critical_path: Duration) -> Option<f64> {
    (!critical_path.is_zero()).then(|| concurrency as f64 / critical_path.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_concurrency_over_the_latency_on_the_path() {
        let calls = PathCalls {
            receive: 1.0,
            store: 3.0,
            settle: 0.0,
        };
        let path = critical_path(calls, Duration::from_millis(20), Duration::from_millis(5));
        assert_eq!(path, Duration::from_millis(35));
        let b = bound(70, path).unwrap();
        assert!((b - 2000.0).abs() < 1e-6, "{b}");
        assert_eq!(bound(70, Duration::ZERO), None);
    }
}
