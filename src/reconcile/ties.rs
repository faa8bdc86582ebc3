//! Same-second ties: Stripe's `created` has whole seconds and event ids are not ordered
//! by time, so two events for one object in the same second carry equal as-ofs and the
//! ordered upsert can only break the tie by a rule (the larger dedupe id), which is right
//! half the time. When a write meets the stored record of a *different* event at the same
//! as-of, [`resolve_tie`] asks the source of truth: it fetches the object and
//! stores that version instead.
//!
//! The fetched version keeps the tied as-of, with a tiebreak that sorts after every event
//! id and orders fetches by time ([`super::fetched_tiebreak`]): any later event still wins, and
//! another event of the same second ties again and fetches again, so the record ends as
//! Stripe's current object whatever the arrival order. Without an API key for the
//! tenant the rule decides as before, and the tie is counted
//! (`stripe_worker.state.ties{resolution="unresolved"}`) and logged.
//!
//! Only whole-second as-ofs (snapshot events' `created`) can tie, so only those writes
//! pay the extra read of the stored record.

use serde_json::Value;

use super::kinds::listed;
use crate::backend::{BackendError, StateRecord, StateStore};
use crate::clock::Clock;
use crate::event::ObjectRef;
use crate::event::envelope::api_path;
use crate::handlers::Handler;
use crate::hydrate::{HydrateError, Hydrator};
use crate::telemetry::metrics;

/// What resolving a tie needs besides the record: where to fetch from (none without an
/// API key), and how the event's handler shaped the record.
pub struct Tie<'a> {
    /// The Stripe API (or a double); `None` keeps the deterministic tiebreak.
    pub hydrator: Option<&'a dyn Hydrator>,
    /// The handler that made the record; it shapes the fetched object too.
    pub handler: &'a dyn Handler,
    /// The event's type, as the handler saw it.
    pub event_type: &'a str,
    /// The event's Connect account (the `Stripe-Context` of the fetch).
    pub connect_account: Option<&'a str>,
    /// The wall clock, for the fetched version's tiebreak.
    pub clock: &'a Clock,
}

/// Whether `record` can tie with another event's record: only snapshot as-ofs, which are
/// whole seconds.
fn could_tie(record: &StateRecord) -> bool {
    record.as_of_ms.rem_euclid(1000) == 0
}

/// The record to write for `record`: itself, or, when it ties at the same second with
/// the stored record of another event, the object fetched from the Stripe API (see the
/// module docs). Errors are the store's and, when a tie is fetched, the fetch's.
pub async fn resolve_tie<S, E>(
    state: &S,
    record: &StateRecord,
    tie: &Tie<'_>,
) -> Result<StateRecord, E>
where
    S: StateStore,
    E: From<BackendError> + From<HydrateError>,
{
    if !could_tie(record) {
        return Ok(record.clone());
    }
    let stored = state.get(&record.tenant, &record.kind, &record.id).await?;
    let tied = stored
        .as_ref()
        .is_some_and(|s| s.as_of_ms == record.as_of_ms && s.tiebreak != record.tiebreak);
    if !tied {
        return Ok(record.clone());
    }
    match fetched_record(record, tie).await? {
        Some(fetched) => {
            metrics::get().state_tie("fetched");
            tracing::debug!(kind = %record.kind, id = %record.id, "same-second tie: storing the fetched object");
            Ok(fetched)
        }
        None => {
            metrics::get().state_tie("unresolved");
            tracing::warn!(
                tenant = %record.tenant,
                kind = %record.kind,
                id = %record.id,
                "same-second tie between two events and no way to fetch the object: \
                 the larger event id wins, which may be the older state"
            );
            Ok(record.clone())
        }
    }
}

/// The record of the object fetched now, or `None` when it cannot be fetched (no API
/// key, a kind with no known API path, a fetched object the handler refuses).
async fn fetched_record(
    record: &StateRecord,
    tie: &Tie<'_>,
) -> Result<Option<StateRecord>, HydrateError> {
    let Some(hydrator) = tie.hydrator else {
        return Ok(None);
    };
    let Some(object_type) = listed(&record.kind).map(|k| k.object_type) else {
        return Ok(None);
    };
    let reference = ObjectRef {
        id: record.id.clone(),
        object_type: object_type.to_owned(),
        url: api_path(object_type, &record.id),
        customer: None,
    };
    let fetched = match hydrator
        .fetch(&record.tenant, &reference, tie.connect_account)
        .await
    {
        Ok(object) => object,
        // No key for this tenant: the same as no API at all.
        Err(HydrateError::Permanent { code, .. })
            if code == crate::stripe_api::codes::MISSING_API_KEY =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let fetched_ms = (tie.clock)();
    Ok(shape(record, tie, &fetched).map(|doc| StateRecord {
        tiebreak: super::fetched_tiebreak(fetched_ms),
        doc: doc.doc,
        customer: doc.customer,
        ..record.clone()
    }))
}

/// The handler's change for the fetched object, the record's kind and id.
fn shape(
    record: &StateRecord,
    tie: &Tie<'_>,
    fetched: &Value,
) -> Option<crate::handlers::StateChange> {
    match tie.handler.changes(tie.event_type, fetched) {
        Ok(changes) => changes
            .into_iter()
            .find(|c| c.kind == record.kind && c.id == record.id),
        Err(error) => {
            tracing::warn!(%error, id = %record.id, "same-second tie: the fetched object was refused");
            None
        }
    }
}
