//! Same-second ties: Stripe's `created` has whole seconds and event ids are not ordered
//! by time, so two events for one object in the same second carry equal as-ofs and the
//! ordered upsert can only break the tie by a rule (the larger dedupe id), which is right
//! half the time. A version fetched from the API is as of its fetch's second
//! ([`super::fetched_as_of`]), so it ties the same way with an event of that second: the
//! event may have happened just before the fetch read the object, or just after.
//!
//! [`ties_with`] is the one rule: a write ties with the stored record when both have the
//! same whole-second as-of and different tiebreaks, unless both are fetched versions
//! (those are ordered by their fetch times, in the tiebreak). A tie is resolved by asking
//! the source of truth: the object is fetched again and that version is stored, as of
//! the new fetch ([`refetched_as_of`]) with a fetched tiebreak. The new fetch started
//! after both tied versions existed, so it holds both; an event of a later second still
//! wins over it, an older event delayed in the queues loses, and another event of the
//! fetch's own second ties again and fetches again: the record ends as Stripe's current
//! object whatever the arrival order.
//!
//! - The worker resolves an event's tie with [`resolve_tie`]. Without an API key for the
//!   tenant the rule decides as before, and the tie is counted
//!   (`stripe_worker.state.ties{resolution="unresolved"}`) and logged.
//! - `import` and `verify --repair` write fetched versions; one that meets an event's
//!   record of its second is fetched again the same way
//!   ([`super::import::Reconciler`]), rather than overwriting an event that may be newer.
//!
//! Only whole-second as-ofs (snapshot events' `created`, fetched versions) can tie, so
//! only those writes pay the extra read of the stored record.

use serde_json::Value;

use super::kinds::listed;
use crate::backend::{BackendError, StateRecord, StateStore};
use crate::clock::Clock;
use crate::event::ObjectRef;
use crate::event::envelope::api_path;
use crate::handlers::Handler;
use crate::stripe::hydrate::{HydrateError, Hydrator};
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

/// Whether `record` can tie with another record: only whole-second as-ofs (snapshot
/// events' `created`, fetched versions).
pub fn could_tie(record: &StateRecord) -> bool {
    record.as_of_ms.rem_euclid(1000) == 0
}

/// Whether writing `record` over `stored` is a same-second tie (see the module docs):
/// the same whole-second as-of, different tiebreaks, and not two fetched versions.
pub fn ties_with(stored: &StateRecord, record: &StateRecord) -> bool {
    could_tie(record)
        && stored.as_of_ms == record.as_of_ms
        && stored.tiebreak != record.tiebreak
        && !(super::is_fetched(&stored.tiebreak) && super::is_fetched(&record.tiebreak))
}

/// The as-of of the version fetched at `fetched_ms` to resolve a tie at `tied_as_of_ms`:
/// the fetch's second ([`super::fetched_as_of`]), never before the tie. The fetch started
/// after both tied versions existed, so it holds both even when the local clock runs a
/// little behind Stripe's.
pub fn refetched_as_of(fetched_ms: i64, tied_as_of_ms: i64) -> i64 {
    super::fetched_as_of(fetched_ms).max(tied_as_of_ms)
}

/// The record to write for `record` (an event's): itself, or, when it ties with the
/// stored record ([`ties_with`]), the object fetched from the Stripe API (see the module
/// docs). Errors are the store's and, when a tie is fetched, the fetch's.
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
    let tied = stored.as_ref().is_some_and(|s| ties_with(s, record));
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
    // The start of the fetch: every change the fetched object can miss comes after it.
    let fetched_ms = (tie.clock)();
    let fetched = match hydrator
        .fetch(&record.tenant, &reference, tie.connect_account)
        .await
    {
        Ok(object) => object,
        // No key for this tenant: the same as no API at all.
        Err(HydrateError::Permanent { code, .. })
            if code == crate::stripe::api::codes::MISSING_API_KEY =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(shape(record, tie, &fetched).map(|doc| StateRecord {
        as_of_ms: refetched_as_of(fetched_ms, record.as_of_ms),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::{fetched_as_of, fetched_tiebreak};

    fn record(as_of_ms: i64, tiebreak: &str) -> StateRecord {
        StateRecord {
            tenant: "t".into(),
            kind: "subscription".into(),
            id: "sub_1".into(),
            customer: None,
            as_of_ms,
            tiebreak: tiebreak.into(),
            doc: json!({}),
        }
    }

    #[test]
    fn ties_are_same_second_versions_of_different_origins() {
        let s = 1_700_000_000_000;
        let fetched = fetched_tiebreak(s + 400);
        let later_fetch = fetched_tiebreak(s + 900);
        // Two events of one second; an event and a fetch of one second, either way.
        assert!(ties_with(&record(s, "evt_a"), &record(s, "evt_b")));
        assert!(ties_with(&record(s, &fetched), &record(s, "evt_b")));
        assert!(ties_with(&record(s, "evt_b"), &record(s, &fetched)));
        // The same version again, two fetches (ordered by fetch time), other seconds,
        // and hydrated versions (ms as-ofs) are no ties.
        assert!(!ties_with(&record(s, "evt_a"), &record(s, "evt_a")));
        assert!(!ties_with(&record(s, &fetched), &record(s, &later_fetch)));
        assert!(!ties_with(&record(s, "evt_a"), &record(s + 1_000, "evt_b")));
        assert!(!ties_with(&record(s + 5, "evt_a"), &record(s + 5, "evt_b")));
    }

    #[test]
    fn a_refetch_is_as_of_its_second_never_before_the_tie() {
        let s = 1_700_000_000_000;
        assert_eq!(refetched_as_of(s + 5_250, s), s + 5_000);
        assert_eq!(refetched_as_of(s + 250, s), s);
        // A local clock behind Stripe's: the refetch still holds both tied versions.
        assert_eq!(refetched_as_of(s - 700, s), s);
        assert_eq!(fetched_as_of(s + 250), s);
    }
}
