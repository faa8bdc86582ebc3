//! `sweep`: events Stripe has that the worker never applied, published again.
//!
//! A sweep lists the tenant's events (`GET /v1/events`, `created[gte]`, newest first,
//! `starting_after`) and asks the dedupe store, read-only, whether every handler that
//! acts on each event has applied it; the events some handler never applied are
//! published on the bus as webhook snapshot entries, where the rules route them like any
//! other. It works for every delivery path, unlike `backfill`, whose
//! `delivery_success=false` only knows about webhook endpoints. Thin events are covered
//! too: the worker dedupes a thin event of a v1 type by its `snapshot_event`, which is the
//! id this list returns.
//!
//! Stripe keeps events for 30 days. An older `--since` is passed to the API as given
//! (with a warning): the API decides what it still holds, not the local clock.
//!
//! [`run_scheduled`] sweeps on a schedule from a watermark per tenant (the checkpoint
//! `sweep:watermark`), leaving the last [`SETTLE`] to deliveries still under way, and
//! warns (log and the `stripe_worker.sweep.unswept_age` gauge) when the oldest unswept
//! time nears Stripe's 30 days.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::backend::{Bus, BusEntry, DedupeKey, ReconcileStore};
use crate::clock::Clock;
use crate::event::decode_message;
use crate::event::envelope::{envelope_json, webhook_snapshot_entry};
use crate::handlers::Handler;
use crate::ops::{OpsError, ceil_secs, time_text};
use crate::stripe_api::StripeApiClient;
use crate::telemetry::metrics;

/// How long Stripe keeps events, in days.
pub const STRIPE_EVENT_DAYS: i64 = crate::ops::backfill::MAX_DAYS;

/// A scheduled sweep warns when its oldest unswept time is older than this many days.
pub const WARN_AFTER_DAYS: i64 = 25;

/// A scheduled sweep leaves events younger than this alone: they may still be on their
/// way through EventBridge and the queues.
pub const SETTLE: Duration = Duration::from_secs(10 * 60);

/// Where a scheduled sweep starts without a watermark: EventBridge retries a delivery
/// for 24 hours, so older gaps are for a `sweep --since` run by hand.
pub const FIRST_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The checkpoint of the scheduled sweep: ms since the epoch up to which it has swept.
pub const WATERMARK: &str = "sweep:watermark";

const DAY_MS: i64 = 86_400_000;

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// The tenant.
    pub tenant: String,
    /// The window start, RFC 3339.
    pub since: String,
    /// The window end (exclusive) when the sweep had one, RFC 3339.
    pub until: Option<String>,
    /// Whether `since` is older than Stripe keeps events (the API was asked anyway).
    pub since_beyond_retention: bool,
    /// List requests made.
    pub pages: u64,
    /// Events listed.
    pub listed: u64,
    /// Events some handler acts on and has not applied.
    pub missing: u64,
    /// Missing events published on the bus.
    pub published: u64,
    /// Events no handler acts on.
    pub unhandled: u64,
    /// Events that are not valid Stripe events (logged).
    pub skipped: u64,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sweep for tenant {} since {}{}: {} events listed in {} pages, {} missing, {} published, {} not handled, {} skipped",
            self.tenant,
            self.since,
            if self.since_beyond_retention {
                " (older than the 30 days Stripe keeps events)"
            } else {
                ""
            },
            self.listed,
            self.pages,
            self.missing,
            self.published,
            self.unhandled,
            self.skipped
        )
    }
}

/// What a sweep needs.
pub struct Sweeper<D, B> {
    /// The Stripe API.
    pub api: Arc<StripeApiClient>,
    /// The dedupe store, asked read-only.
    pub dedupe: Arc<D>,
    /// Where missing events are published.
    pub bus: Arc<B>,
    /// The worker's handlers (their names are part of the dedupe key).
    pub handlers: Vec<Arc<dyn Handler>>,
    /// The wall clock.
    pub clock: Clock,
}

impl<D: ReconcileStore, B: Bus> Sweeper<D, B> {
    /// Publish `tenant`'s events created in `since_ms..until_ms` (no end when `None`)
    /// that some handler has not applied.
    pub async fn sweep(
        &self,
        tenant: &str,
        since_ms: i64,
        until_ms: Option<i64>,
        progress: &indicatif::ProgressBar,
    ) -> Result<SweepReport, OpsError> {
        let now = (self.clock)();
        let beyond = since_ms < now - STRIPE_EVENT_DAYS * DAY_MS;
        if beyond {
            tracing::warn!(
                tenant,
                since = %time_text(since_ms),
                "sweep: --since is older than the 30 days Stripe keeps events; \
                 asking the API anyway, older events may be gone"
            );
        }
        let mut report = SweepReport {
            tenant: tenant.to_owned(),
            since: time_text(since_ms),
            until: until_ms.map(time_text),
            since_beyond_retention: beyond,
            ..SweepReport::default()
        };
        // `created` is whole seconds: round the start up and the end up, so the window
        // is exactly the events created in [since, until).
        let mut params = vec![("created[gte]".to_owned(), ceil_secs(since_ms).to_string())];
        if let Some(until) = until_ms {
            params.push(("created[lt]".to_owned(), ceil_secs(until).to_string()));
        }
        let mut after: Option<String> = None;
        loop {
            let page = self
                .api
                .list_page(tenant, "/v1/events", &params, after.as_deref(), 100)
                .await?;
            report.pages += 1;
            report.listed += page.data.len() as u64;
            let mut missing: Vec<BusEntry> = Vec::new();
            for event in &page.data {
                match self.check(tenant, event, now).await? {
                    Check::Applied => {}
                    Check::Unhandled => report.unhandled += 1,
                    Check::Invalid => report.skipped += 1,
                    Check::Missing(entry) => missing.push(*entry),
                }
            }
            report.missing += missing.len() as u64;
            for chunk in missing.chunks(10) {
                crate::backend::publish_entries(self.bus.as_ref(), chunk)
                    .await
                    .map_err(|e| OpsError::Publish(format!("{e:#}")))?;
                report.published += chunk.len() as u64;
            }
            progress.set_position(report.listed);
            after = page.last_id().map(str::to_owned);
            if !page.has_more || after.is_none() {
                break;
            }
        }
        progress.finish_and_clear();
        Ok(report)
    }

    /// Whether every handler acting on `event` has applied it; if not, the entry to
    /// publish.
    async fn check(&self, tenant: &str, event: &Value, now: i64) -> Result<Check, OpsError> {
        // The entry is decoded as the worker will decode it, so the dedupe id asked for
        // is the one the worker would claim.
        let decoded = webhook_snapshot_entry(event, tenant, now, None)
            .map_err(|e| e.to_string())
            .and_then(|entry| {
                let envelope = envelope_json(&entry, "sweep", now, "local", None)
                    .map_err(|e| e.to_string())?;
                let decoded =
                    decode_message(envelope.to_string().as_bytes()).map_err(|e| e.to_string())?;
                Ok((entry, decoded))
            });
        let (entry, decoded) = match decoded {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "sweep: skipping an event that is not a valid Stripe event");
                return Ok(Check::Invalid);
            }
        };
        let mut acting = self
            .handlers
            .iter()
            .filter(|h| h.handles(&decoded.event_type))
            .peekable();
        if acting.peek().is_none() {
            return Ok(Check::Unhandled);
        }
        for handler in acting {
            let key = DedupeKey {
                tenant: tenant.to_owned(),
                handler: handler.name().to_owned(),
                dedupe_id: decoded.dedupe_id.clone(),
            };
            if !self.dedupe.was_applied(&key, now).await? {
                return Ok(Check::Missing(Box::new(entry)));
            }
        }
        Ok(Check::Applied)
    }

    /// One scheduled sweep of `tenant` from its watermark; the new watermark is saved
    /// only when the sweep succeeds, so a failed one is covered by the next.
    pub async fn sweep_from_watermark(&self, tenant: &str) -> Result<SweepReport, OpsError> {
        let now = (self.clock)();
        let since = match self.dedupe.checkpoint(tenant, WATERMARK).await? {
            Some(text) => text.parse::<i64>().map_err(|_| {
                OpsError::Invalid(format!(
                    "sweep watermark `{text}` of {tenant} is not a time"
                ))
            })?,
            None => now - millis(FIRST_WINDOW),
        };
        let unswept_days = (now - since) as f64 / DAY_MS as f64;
        metrics::get().sweep_unswept_age((now - since) as f64 / 1000.0);
        if unswept_days > WARN_AFTER_DAYS as f64 {
            tracing::warn!(
                tenant,
                unswept_days,
                "sweep: events older than {WARN_AFTER_DAYS} days are still unswept; Stripe \
                 keeps events for 30 days (fix the Stripe API access, or run `import`)"
            );
        }
        let until = now - millis(SETTLE);
        if until <= since {
            return Ok(SweepReport {
                tenant: tenant.to_owned(),
                since: time_text(since),
                until: Some(time_text(until)),
                ..SweepReport::default()
            });
        }
        let report = self
            .sweep(
                tenant,
                since,
                Some(until),
                &indicatif::ProgressBar::hidden(),
            )
            .await?;
        self.dedupe
            .set_checkpoint(tenant, WATERMARK, Some(&until.to_string()))
            .await?;
        Ok(report)
    }
}

/// Sweep each of `tenants` every `every` until `shutdown`, logging each report.
pub async fn run_scheduled<D: ReconcileStore, B: Bus>(
    sweeper: Sweeper<D, B>,
    tenants: Vec<String>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for tenant in &tenants {
            // Dropped at shutdown mid-sweep: published events stay published, the
            // watermark stays where it was, and the next run goes over the window again.
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = sweeper.sweep_from_watermark(tenant) => result,
            };
            match result {
                Ok(report) => tracing::info!(
                    tenant,
                    listed = report.listed,
                    missing = report.missing,
                    published = report.published,
                    "scheduled sweep done"
                ),
                Err(error) => {
                    tracing::warn!(tenant, %error, "scheduled sweep failed; the next one covers its window")
                }
            }
        }
    }
}

enum Check {
    Applied,
    Unhandled,
    Invalid,
    Missing(Box<BusEntry>),
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
