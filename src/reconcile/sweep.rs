//! `sweep`: events Stripe has that the worker never applied, published again.
//!
//! A sweep lists the tenant's events (`GET /v1/events`, `created[gte]`, newest first,
//! `starting_after`) and asks the dedupe store, read-only, whether every handler that
//! acts on each event has applied it; the events some handler never applied are
//! published on the bus as webhook snapshot entries, where the rules route them like any
//! other. It works for every delivery path, unlike `backfill`, whose
//! `delivery_success=false` only knows about webhook endpoints. A thin event of a v1 type
//! is covered by this list: the worker dedupes it by its `snapshot_event`, the id this
//! list returns.
//!
//! Thin events of API v2 types are only in the v2 list (`GET /v2/core/events`, RFC 3339
//! `created[gte]`, `page` tokens via `next_page_url`). For a tenant with an event
//! destination ([`thin_destinations`]) the sweep lists it too, decodes each event as the
//! worker would (the dedupe id is its `snapshot_event`, else its own id) and publishes the
//! missing ones as that destination delivers them: the thin `v2.core.event` on the
//! partner source ([`partner_v2_event_entry`]), so the worker hydrates them as usual. An
//! event the v1 list of the same sweep already published (same dedupe id) is not
//! published twice. API v2 takes secret keys only: with a restricted key the v2 list
//! answers 401/403, and the sweep reports it (`v2_skipped`, a warning) and goes on.
//!
//! Stripe keeps events for 30 days. An older `--since` is passed to the API as given
//! (with a warning): the API decides what it still holds, not the local clock.
//!
//! [`run_scheduled`] sweeps on a schedule from a watermark per tenant (the checkpoint
//! `sweep:watermark`), leaving the last [`SETTLE`] to deliveries still under way, and
//! warns (log and the `stripe_worker.sweep.unswept_age` gauge) when the oldest unswept
//! time nears Stripe's 30 days.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backend::{Bus, BusEntry, DedupeKey, ReconcileStore};
use crate::clock::Clock;
use crate::event::decode_message;
use crate::event::envelope::{
    EnvelopeError, envelope_json, partner_v2_event_entry, rfc3339_millis, webhook_snapshot_entry,
};
use crate::handlers::Handler;
use crate::ops::{OpsError, ceil_secs, time_text};
use crate::stripe::api::{StripeApiClient, codes};
use crate::stripe::hydrate::HydrateError;
use crate::telemetry::metrics;
use crate::tenant::TenantConfig;

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

/// The v1 event list (`GET /v1/events`).
pub const V1_LIST: &str = "v1";

/// The API v2 event list (`GET /v2/core/events`).
pub const V2_LIST: &str = "v2";

const V2_EVENTS_PATH: &str = "/v2/core/events";

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
    /// List requests made (both lists).
    pub pages: u64,
    /// Events listed (both lists).
    pub listed: u64,
    /// Events some handler acts on and has not applied (both lists, each event once).
    pub missing: u64,
    /// Missing events published on the bus (both lists).
    pub published: u64,
    /// Events no handler acts on (both lists).
    pub unhandled: u64,
    /// Events that are not valid Stripe events (logged; both lists).
    pub skipped: u64,
    /// The same, per list read: [`V1_LIST`], and [`V2_LIST`] for a tenant with an event
    /// destination.
    pub lists: BTreeMap<String, ListCounts>,
    /// Why the v2 list was not read although the tenant has an event destination (a
    /// restricted key: API v2 takes secret keys only).
    pub v2_skipped: Option<String>,
}

/// What a sweep found in one event list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListCounts {
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
    /// Missing events an earlier list of the same sweep already published (the same
    /// dedupe id, e.g. a thin event of a v1 type); not counted in `missing`.
    pub duplicates: u64,
}

impl SweepReport {
    /// Add one list's counts to the totals.
    fn add(&mut self, list: &str, counts: ListCounts) {
        self.pages += counts.pages;
        self.listed += counts.listed;
        self.missing += counts.missing;
        self.published += counts.published;
        self.unhandled += counts.unhandled;
        self.skipped += counts.skipped;
        self.lists.insert(list.to_owned(), counts);
    }
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
        )?;
        if self.lists.len() > 1 {
            for (list, c) in &self.lists {
                writeln!(
                    f,
                    "  {list} list: {} listed, {} missing, {} published, {} already published by another list",
                    c.listed, c.missing, c.published, c.duplicates
                )?;
            }
        }
        if let Some(why) = &self.v2_skipped {
            writeln!(f, "  v2 list not read: {why}")?;
        }
        Ok(())
    }
}

/// Per tenant, the event destination (`ed_...`) whose deliveries a sweep imitates for
/// events only the v2 list has: the first one `tenants` maps to the tenant. The
/// configuration does not say which destinations send thin payloads, so every tenant
/// with a destination gets its v2 list read (a few requests when it holds nothing the
/// handlers act on).
pub fn thin_destinations(tenants: &TenantConfig) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for (destination, tenant) in &tenants.destinations {
        found
            .entry(tenant.clone())
            .or_insert_with(|| destination.clone());
    }
    found
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
    /// Per tenant, the destination to publish v2-list events as ([`thin_destinations`]);
    /// a tenant without one is swept from the v1 list only.
    pub thin_destinations: BTreeMap<String, String>,
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
        let mut published = HashSet::new();
        let v1 = self
            .sweep_v1(tenant, (since_ms, until_ms), now, &mut published, progress)
            .await?;
        report.add(V1_LIST, v1);
        if let Some(destination) = self.thin_destinations.get(tenant) {
            let v2 = self
                .sweep_v2(
                    tenant,
                    destination,
                    (since_ms, until_ms),
                    now,
                    &mut published,
                    &mut report,
                    progress,
                )
                .await?;
            if let Some(v2) = v2 {
                report.add(V2_LIST, v2);
            }
        }
        progress.finish_and_clear();
        Ok(report)
    }

    /// The v1 list: every event, as a webhook snapshot entry.
    async fn sweep_v1(
        &self,
        tenant: &str,
        (since_ms, until_ms): (i64, Option<i64>),
        now: i64,
        published: &mut HashSet<String>,
        progress: &indicatif::ProgressBar,
    ) -> Result<ListCounts, OpsError> {
        // `created` is whole seconds: round the start up and the end up, so the window
        // is exactly the events created in [since, until).
        let mut params = vec![("created[gte]".to_owned(), ceil_secs(since_ms).to_string())];
        if let Some(until) = until_ms {
            params.push(("created[lt]".to_owned(), ceil_secs(until).to_string()));
        }
        let mut counts = ListCounts::default();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .api
                .list_page(tenant, "/v1/events", &params, after.as_deref(), 100)
                .await?;
            counts.pages += 1;
            let entries = page
                .data
                .iter()
                .map(|event| webhook_snapshot_entry(event, tenant, now, None));
            self.sweep_page(tenant, entries, now, published, &mut counts)
                .await?;
            progress.set_position(counts.listed);
            after = page.last_id().map(str::to_owned);
            if !page.has_more || after.is_none() {
                return Ok(counts);
            }
        }
    }

    /// The v2 list: every event, as `destination` delivers it. `None` when the API
    /// refuses the key (see the module docs; noted in `report`).
    #[allow(clippy::too_many_arguments)]
    async fn sweep_v2(
        &self,
        tenant: &str,
        destination: &str,
        (since_ms, until_ms): (i64, Option<i64>),
        now: i64,
        published: &mut HashSet<String>,
        report: &mut SweepReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<Option<ListCounts>, OpsError> {
        let time = |ms: i64| {
            rfc3339_millis(ms).map_err(|e| OpsError::Invalid(format!("sweep window: {e}")))
        };
        let mut params = vec![("created[gte]".to_owned(), time(since_ms)?)];
        if let Some(until) = until_ms {
            params.push(("created[lt]".to_owned(), time(until)?));
        }
        let mut counts = ListCounts::default();
        let mut next: Option<String> = None;
        loop {
            let page = match self
                .api
                .list_v2_page(tenant, V2_EVENTS_PATH, &params, next.as_deref(), 100)
                .await
            {
                Ok(page) => page,
                Err(HydrateError::Permanent { code, message, .. })
                    if code == codes::UNAUTHORIZED || code == codes::FORBIDDEN =>
                {
                    let why = format!(
                        "GET {V2_EVENTS_PATH} refused the key ({message}); API v2 takes \
                         secret keys only, so thin events of v2 types were not swept"
                    );
                    tracing::warn!(tenant, "sweep: {why}");
                    report.v2_skipped = Some(why);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            counts.pages += 1;
            let entries = page
                .data
                .iter()
                .map(|event| partner_v2_event_entry(event, destination));
            self.sweep_page(tenant, entries, now, published, &mut counts)
                .await?;
            progress.set_position(report.listed + counts.listed);
            next = page.next_page_url;
            if next.is_none() || page.data.is_empty() {
                return Ok(Some(counts));
            }
        }
    }

    /// Check each of one page's `entries` (as built from its events) and publish the
    /// missing ones not in `published` yet, counting in `counts`.
    async fn sweep_page(
        &self,
        tenant: &str,
        entries: impl Iterator<Item = Result<BusEntry, EnvelopeError>>,
        now: i64,
        published: &mut HashSet<String>,
        counts: &mut ListCounts,
    ) -> Result<(), OpsError> {
        let mut missing: Vec<BusEntry> = Vec::new();
        for entry in entries {
            counts.listed += 1;
            match self.check(tenant, entry, now).await? {
                Check::Applied => {}
                Check::Unhandled => counts.unhandled += 1,
                Check::Invalid => counts.skipped += 1,
                Check::Missing(entry, dedupe_id) => {
                    if published.insert(dedupe_id) {
                        missing.push(*entry);
                    } else {
                        counts.duplicates += 1;
                    }
                }
            }
        }
        counts.missing += missing.len() as u64;
        for chunk in missing.chunks(10) {
            crate::backend::publish_entries(self.bus.as_ref(), chunk)
                .await
                .map_err(|e| OpsError::Publish(format!("{e:#}")))?;
            counts.published += chunk.len() as u64;
        }
        Ok(())
    }

    /// Whether every handler acting on the event of `entry` has applied it; if not, the
    /// entry to publish and the event's dedupe id.
    async fn check(
        &self,
        tenant: &str,
        entry: Result<BusEntry, EnvelopeError>,
        now: i64,
    ) -> Result<Check, OpsError> {
        // The entry is decoded as the worker will decode it, so the dedupe id asked for
        // is the one the worker would claim.
        let decoded = entry.map_err(|e| e.to_string()).and_then(|entry| {
            let envelope =
                envelope_json(&entry, "sweep", now, "local", None).map_err(|e| e.to_string())?;
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
                return Ok(Check::Missing(Box::new(entry), decoded.dedupe_id));
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
    Missing(Box<BusEntry>, String),
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
