//! Holding a dedupe claim while a handler's effect outside the store runs: renewed on a
//! heartbeat so it never runs out under a live worker, and released on every way out but
//! a commit, so the next attempt need not wait for it to expire.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::Outcome;
use crate::backend::{BackendError, DedupeKey, DedupeStore, FencingToken};
use crate::clock::Clock;

/// A claim this worker holds. Dropping it armed (the work failed, was cancelled, or the
/// pool's hard stop dropped it) releases the claim on a task of `releases`.
pub(super) struct HeldClaim<D: DedupeStore> {
    dedupe: Arc<D>,
    key: DedupeKey,
    token: FencingToken,
    releases: TaskTracker,
    armed: bool,
}

impl<D: DedupeStore> HeldClaim<D> {
    /// The claim on `key` held with `token`.
    pub(super) fn new(
        dedupe: Arc<D>,
        key: DedupeKey,
        token: FencingToken,
        releases: &TaskTracker,
    ) -> Self {
        HeldClaim {
            dedupe,
            key,
            token,
            releases: releases.clone(),
            armed: true,
        }
    }

    /// Renew the claim every third of `lease`, so two renewals may fail before it runs
    /// out. Returns only when the claim is lost (another worker took it over), with the
    /// message's outcome; the work racing this future is then dropped, and its fenced
    /// write could not have gone through anyway.
    pub(super) async fn keep(&self, lease: Duration, clock: &Clock) -> Outcome {
        let period = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            match self
                .dedupe
                .renew(&self.key, &self.token, clock(), lease)
                .await
            {
                Ok(()) => {}
                Err(BackendError::LeaseLost { .. }) => {
                    return Outcome::RetryLater {
                        kind: "lease_lost",
                        message: format!(
                            "the claim on {} was taken over while its handler ran",
                            self.key.storage_key()
                        ),
                    };
                }
                // The lease may well still hold: the fenced write decides.
                Err(error) => tracing::warn!(%error, "could not renew a dedupe claim"),
            }
        }
    }

    /// The work committed: the claim is now the applied-marker, nothing to release.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl<D: DedupeStore> Drop for HeldClaim<D> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Dropped outside a runtime nothing can be sent: the lease expires instead.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let dedupe = Arc::clone(&self.dedupe);
        let key = self.key.clone();
        let token = self.token.clone();
        self.releases.spawn(async move {
            // If the release fails the lease simply expires: nothing is lost.
            if let Err(error) = dedupe.release(&key, &token).await {
                tracing::warn!(%error, "could not release a dedupe claim");
            }
        });
    }
}
