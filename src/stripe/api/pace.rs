//! Pacing calls to the Stripe API: one token bucket per API key, shared by every caller
//! of the client (the worker's hydrations, `import`, `verify`, `sweep`), so that together
//! they stay under the key's rate limit instead of each tripping 429s on its own.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Stripe's documented read limits are 100 requests per second in live mode and 25 in
/// test mode (per account). The default stays under both, leaving room for the
/// account's other users of the same limit.
pub const DEFAULT_REQUESTS_PER_SEC: f64 = 20.0;

/// A token bucket: `rate` tokens a second, at most `burst` saved up. Callers reserve a
/// token and sleep until it is theirs, so concurrent callers queue fairly in the order
/// they asked, and a cancelled caller loses only its own turn.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Tokens available; negative when callers have reserved tokens not yet refilled.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate_per_sec` tokens a second (at least one a minute), holding
    /// one second's worth (at least one token).
    pub fn new(rate_per_sec: f64) -> Self {
        let rate = if rate_per_sec.is_finite() {
            rate_per_sec.max(1.0 / 60.0)
        } else {
            DEFAULT_REQUESTS_PER_SEC
        };
        let burst = rate.max(1.0);
        TokenBucket {
            rate,
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Wait until a call may be made.
    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Keep every caller away for `pause` (a `Retry-After` from the server applies to the
    /// key, not only to the call that got it).
    pub fn pause(&self, pause: Duration) {
        let mut state = self.lock();
        self.refill(&mut state, Instant::now());
        state.tokens = state.tokens.min(0.0) - pause.as_secs_f64() * self.rate;
    }

    /// Take a token at `now`; how long to wait before it is ours.
    fn reserve(&self, now: Instant) -> Duration {
        let mut state = self.lock();
        self.refill(&mut state, now);
        state.tokens -= 1.0;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.rate)
        }
    }

    fn refill(&self, state: &mut BucketState, now: Instant) {
        let elapsed = now.saturating_duration_since(state.last).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.rate).min(self.burst);
        state.last = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BucketState> {
        // Every critical section is a few arithmetic steps that cannot leave the state
        // half-updated, so a poisoned lock's data is still good.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits of `n` reservations made at `at`.
    fn waits(bucket: &TokenBucket, at: Instant, n: usize) -> Vec<Duration> {
        (0..n).map(|_| bucket.reserve(at)).collect()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let bucket = TokenBucket::new(10.0);
        let t0 = bucket.lock().last;
        assert!(
            waits(&bucket, t0, 10).iter().all(Duration::is_zero),
            "the burst is free"
        );
        // The next ones queue a tenth of a second apart.
        let next = waits(&bucket, t0, 3);
        let ms: Vec<u128> = next.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 300]);
        // A second later 10 tokens came back, 3 of them already promised.
        let later = waits(&bucket, t0 + Duration::from_secs(1), 8);
        assert!(later[..7].iter().all(Duration::is_zero));
        assert_eq!(later[7].as_millis(), 100);
    }

    #[test]
    fn a_pause_holds_every_caller() {
        let bucket = TokenBucket::new(100.0);
        bucket.pause(Duration::from_secs(2));
        let now = bucket.lock().last;
        let wait = bucket.reserve(now);
        assert!(wait >= Duration::from_secs(2), "{wait:?}");
    }

    #[test]
    fn odd_rates_are_bounded() {
        assert_eq!(TokenBucket::new(f64::NAN).rate, DEFAULT_REQUESTS_PER_SEC);
        assert!(TokenBucket::new(0.0).rate > 0.0);
        assert_eq!(TokenBucket::new(0.5).burst, 1.0);
    }
}
