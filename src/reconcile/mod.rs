//! Keeping the state equal to Stripe, from the Stripe API, the source of truth:
//!
//! - [`import`]: list every object of every kind the handlers keep and write it through
//!   the same ordered upsert as events (a new deployment on an existing account);
//! - [`verify`]: compare the stored state with the API field by field, and repair;
//! - [`sweep`]: list the account's recent events and publish the ones the dedupe store
//!   has never seen (a disabled destination, an event lost past EventBridge's retries);
//! - [`ties`]: two versions of one object from the same second (two events, or an event
//!   and a fetch) cannot be ordered by their as-of; the object is fetched instead.
//!
//! Every version fetched from the API is as of the fetch time at Stripe's resolution
//! ([`fetched_as_of`]), with a tiebreak after every event id ([`fetched_tiebreak`]).
//!
//! Every call goes through [`crate::stripe::api::StripeApiClient`], paced per API key.
//! Errors are [`crate::ops::OpsError`], as for the other operations.

pub mod import;
pub mod kinds;
pub mod sweep;
pub mod ties;
pub mod verify;

/// The start of every fetched version's tiebreak (see [`fetched_tiebreak`]).
pub const FETCHED_PREFIX: &str = "~fetched.";

/// The tiebreak of a version fetched from the API at `fetched_ms` (import, repair, a
/// resolved tie): `~` sorts after every Stripe id, so on an equal as-of it wins over an
/// event's record and a later fetch over an earlier one (fixed width: text order is time
/// order).
pub fn fetched_tiebreak(fetched_ms: i64) -> String {
    format!("{FETCHED_PREFIX}{:015}", fetched_ms.max(0))
}

/// Whether `tiebreak` is a fetched version's ([`fetched_tiebreak`]), not an event's.
pub fn is_fetched(tiebreak: &str) -> bool {
    tiebreak.starts_with(FETCHED_PREFIX)
}

/// The as-of of an object whose fetch started at `fetch_started_ms` (import,
/// `verify --repair`, a resolved tie): the fetch time at Stripe's resolution, the whole
/// second it started in. Events are ordered by `created`, whole seconds, so against this
/// as-of:
///
/// - an event created in a later second is newer than the fetch, and wins;
/// - an event created in an earlier second happened before the fetch started, so the
///   fetched object already holds it, and it loses;
/// - an event created in the fetch's own second may be either: its as-of is equal and its
///   tiebreak differs, a *tie*, which [`ties`] resolves by fetching again.
///
/// The start of the fetch is the bound to use, not its end (nor the response's `Date`):
/// every change the fetched object can miss happened after the fetch started, so its
/// event is created in the fetch's second or later, never earlier.
pub fn fetched_as_of(fetch_started_ms: i64) -> i64 {
    fetch_started_ms.div_euclid(1000) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_versions_are_as_of_their_second() {
        assert_eq!(fetched_as_of(1_700_000_000_999), 1_700_000_000_000);
        assert_eq!(fetched_as_of(1_700_000_000_000), 1_700_000_000_000);
        assert_eq!(fetched_as_of(-1), -1_000);
        assert!(fetched_tiebreak(5).as_str() > "evt_1Zzzzzzzzzzzzzzzzzzzzzzzz");
        assert!(fetched_tiebreak(1_700_000_000_001) > fetched_tiebreak(1_700_000_000_000));
        assert!(fetched_tiebreak(1_700_000_000_000) > fetched_tiebreak(999));
        assert!(is_fetched(&fetched_tiebreak(7)));
        assert!(!is_fetched("evt_1"));
    }
}
