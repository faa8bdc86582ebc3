//! `stripe-worker backfill`, for **webhook endpoints**: Stripe never re-sends events
//! created while an endpoint was disabled. This lists them from the Stripe API
//! (`GET /v1/events` with `delivery_success=false`, newest first, paginated with
//! `starting_after`, at most the last [`MAX_DAYS`] days, which is all Stripe keeps) with
//! the tenant's key, and publishes them on the bus as webhook snapshot events. Stripe
//! sets `delivery_success` for webhook endpoints only, so for event destinations (and
//! any other gap) use [`crate::reconcile::sweep`], which asks the dedupe store instead.
//! Dedupe makes overlaps with events that did arrive harmless, and each page is
//! published before the next is asked for, so an interrupted backfill is finished by
//! running it again.

use std::fmt;

use serde::Serialize;

use super::{OpsError, time_text};
use crate::backend::{Bus, BusEntry};
use crate::event::envelope::webhook_snapshot_entry;
use crate::stripe::api::{EventListQuery, StripeApiClient};

/// How far back Stripe keeps events, in days.
pub const MAX_DAYS: i64 = 30;

/// Events per page (Stripe's maximum).
pub const PAGE_SIZE: u8 = 100;

/// What a backfill did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// The tenant.
    pub tenant: String,
    /// The window start actually used, RFC 3339.
    pub since: String,
    /// Whether `--since` was older than Stripe keeps events and was moved forward.
    pub since_clamped: bool,
    /// Pages fetched.
    pub pages: u64,
    /// Events listed.
    pub listed: u64,
    /// Events published on the bus.
    pub published: u64,
    /// Events that could not be made into a bus entry (no id or type), skipped.
    pub skipped: u64,
}

impl fmt::Display for BackfillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backfill for tenant {} since {}{}: {} undelivered events listed in {} pages, {} published, {} skipped",
            self.tenant,
            self.since,
            if self.since_clamped {
                " (moved forward: Stripe keeps 30 days)"
            } else {
                ""
            },
            self.listed,
            self.pages,
            self.published,
            self.skipped
        )
    }
}

/// List `tenant`'s undelivered events created at or after `since_ms` (clamped to the last
/// [`MAX_DAYS`] days before `now_ms`) and publish them on `bus`.
pub async fn backfill<B: Bus>(
    api: &StripeApiClient,
    bus: &B,
    tenant: &str,
    since_ms: i64,
    now_ms: i64,
    progress: &indicatif::ProgressBar,
) -> Result<BackfillReport, OpsError> {
    let oldest = now_ms - MAX_DAYS * 86_400_000;
    let since = since_ms.max(oldest);
    let mut report = BackfillReport {
        tenant: tenant.to_owned(),
        since: time_text(since),
        since_clamped: since != since_ms,
        pages: 0,
        listed: 0,
        published: 0,
        skipped: 0,
    };
    let mut query = EventListQuery {
        created_gte_secs: Some(super::ceil_secs(since)),
        delivery_success: Some(false),
        starting_after: None,
        limit: PAGE_SIZE,
    };
    loop {
        let page = api.list_events(tenant, &query).await?;
        report.pages += 1;
        report.listed += page.data.len() as u64;
        let mut entries: Vec<BusEntry> = Vec::with_capacity(page.data.len());
        for event in &page.data {
            match webhook_snapshot_entry(event, tenant, now_ms, None) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    tracing::warn!(%error, "backfill: skipping an event that is not a valid Stripe event");
                    report.skipped += 1;
                }
            }
        }
        for chunk in entries.chunks(10) {
            crate::backend::publish_entries(bus, chunk)
                .await
                .map_err(|e| OpsError::Publish(format!("{e:#}")))?;
            report.published += chunk.len() as u64;
            progress.set_position(report.published);
        }
        let last = page
            .data
            .last()
            .and_then(|e| e.get("id"))
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        match (page.has_more, last) {
            (true, Some(last)) => query.starting_after = Some(last),
            _ => break,
        }
    }
    progress.finish_and_clear();
    Ok(report)
}
